"""Audio recipe benchmark (issue 19): audio-vq-16k with an 8-level residual VQ, trained with and
without the audio critics at fixed CPU budgets, against Opus and MP3 on held-out speech.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/audio_recipe.py --out /tmp/audio-recipe \
        --budgets 120 1200

Budgets are CPU seconds of the training process, not wall time: the development machine has
two cores shared with other jobs, so a wall-clock budget would measure the load. Each recipe
is probed first (short `vqtok train` runs whose CPU time comes from `os.wait4`'s resource
usage of that child: user + system seconds) to find its fixed cost and its CPU seconds per
step, once without the critic and, for the adversarial recipe, once with it (a critic step
costs several times a plain one). `--steps` is then what fits the budget; the real run's CPU
time is measured the same way and reported beside it. Run with one torch thread
(OMP_NUM_THREADS=1) so that a CPU second is a CPU second of one core.

Data: the demo's speech (demo/data/audio) with harbour.flac and rainbow.flac held out, as
rd_benchmark.py does, plus sentences spoken by espeak-ng in several voices, speeds and
pitches (16 kHz mono FLAC, written under --out/espeak), the last few sentences held out.
espeak-ng is not installed in CI; without it the script says so and trains on the demo's
speech alone.

Recipes (all: audio-vq-16k, rvq of 8 levels x 1024 codes, 8-dim lookup, 4096-token restart
window, quantizer dropout 0.5; batch 8 half-second crops, AdamW lr 1e-3, fp32):
- baseline: today's reconstruction defaults (L2 + multi-resolution STFT + mel).
- adversarial: the same + `adversarial=msstft+mpd` (hinge), feature matching 3 and EnCodec's
  balancer (adaptive weight off), docs/training.md's audio example; the critic starts once
  a third of the budget is spent.
- adversarial-aw: the same critics and feature matching with VQGAN's adaptive weight in
  place of the balancer (measured: the balancer alone ruins these short runs; BENCHMARKS.md).
- balancer: baseline + the balancer, no critic (isolates the balancer).
- waveform-l1: baseline + `l1_weight=1` (costs what the baseline costs).
Probe costs are cached in --out/probe.json and finished runs (<recipe>-run.json) are reused,
so a rerun only evaluates.

Everything goes through `vqtok shards make`, `vqtok train`, `vqtok fit-prior`, `vqtok
compress` and `vqtok decompress`; the sweep calls `evaluate_rd` with the Opus and MP3
sweeps of rd_benchmark.py. Writes under --out/budget-<seconds>: the runs, rd/ (curves,
rd.csv, plots), wav/ (decoded held-out sentences), spectrograms/ (original | recipes) and
summary.json; --results receives the spectrogram and RD PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from PIL import Image, ImageDraw, ImageFont

from vqtok.pipelines.compression.vqt import (
    compress_bytes,
    compress_file,
    decode_codes,
    decompress_file,
    read_vqt,
)
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd
from vqtok.pipelines.jobs.common import load_model

ROOT = Path(__file__).resolve().parents[1]
VQTOK = str(Path(sys.executable).with_name("vqtok"))
ESPEAK = shutil.which("espeak-ng")
HELD_OUT_SPEECH = ("harbour.flac", "rainbow.flac")
AUDIO_SWEEPS = {"opus": [6, 8, 12, 24], "mp3": [8, 16, 32]}
SAMPLE_RATE = 16000
# (voice, words per minute, pitch): male and female variants, slow to fast.
VOICES = [("en-us", 150, 50), ("en-gb+f3", 170, 60), ("en-us+m3", 130, 40),
          ("en-gb-scotland", 160, 50), ("en-us+f4", 190, 70), ("en-029+m1", 140, 35)]
SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "Please bring the blue folder to the meeting on Thursday afternoon.",
    "A cold wind swept across the frozen lake before sunrise.",
    "She counted seven boats drifting slowly toward the harbour wall.",
    "The library closes early on public holidays and Sunday mornings.",
    "Fresh bread and strong coffee made the kitchen smell wonderful.",
    "Our train was delayed by forty minutes because of the heavy snow.",
    "He repaired the bicycle chain with a small pair of pliers.",
    "The children laughed as the puppy chased its own tail in circles.",
    "Thunder rolled over the hills, and the first heavy drops began to fall.",
    "Turn left at the bakery, then walk straight until you reach the bridge.",
    "Numbers such as three hundred and twelve are hard to remember.",
    "The museum displays paintings from the early nineteenth century.",
    "Quiet voices drifted from the garden through the open window.",
    "Every spring the river floods the meadow near the village church.",
    "The engineer checked the pressure gauge twice before starting the pump.",
    "Would you like tea, coffee, or a glass of cold water?",
    "The market sells apples, pears, plums and bright red cherries.",
    "A sudden silence fell over the crowded room when the door opened.",
    "They walked along the beach collecting smooth grey pebbles.",
    "The pilot announced that we would land in twenty minutes.",
    "My grandmother kept her letters in a wooden box under the bed.",
    "Heavy fog covered the valley until nearly midday.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Light travels much faster than sound through the air.",
    "Please speak slowly and clearly when you leave a message.",
    "The farmer drove his tractor across the muddy field at dawn.",
    "We watched the stars from the roof until the clouds rolled in.",
    "Six thin threads of silver wire held the lantern in place.",
    "The committee will publish its report at the end of the month.",
    # Held out: never trained on.
    "A gentle breeze carried the scent of pine trees down the mountain path.",
    "The shopkeeper wrapped the fragile vase in several layers of paper.",
    "Sharp questions from the reporters made the minister pause and think.",
]
ESPEAK_HELD_OUT = 3
COMMON_TRAIN = ["--batch-size", "8", "--lr", "1e-3", "--no-progress",
                "--set", "crop=[8000]", "--set", "precision=fp32", "--set", "tensorboard=false",
                "--set", "log_every=10", "--set", "shuffle_buffer=32"]
RVQ_OPTIONS = ["--set", "model_options.quantizer=rvq",
               "--set", "model_options.quantizer_options.num_levels=8",
               "--set", "model_options.quantizer_options.codebook_size=1024",
               "--set", "model_options.quantizer_options.codebook_dim=8",
               "--set", "model_options.quantizer_options.usage_window=4096",
               "--set", "model_options.quantizer_options.quantizer_dropout=0.5"]
ADVERSARIAL = ["--set", "adversarial=msstft+mpd", "--set", "adversarial_loss=hinge",
               "--set", "feature_matching_weight=3", "--set", "balancer=true",
               "--set", "adaptive_weight=false"]
# The same critics with VQGAN's adaptive weight in place of the balancer.
ADVERSARIAL_AW = ["--set", "adversarial=msstft+mpd", "--set", "adversarial_loss=hinge",
                  "--set", "feature_matching_weight=3"]
RECIPES = {"baseline": [], "adversarial": ADVERSARIAL, "waveform-l1": ["--set", "l1_weight=1"],
           "balancer": ["--set", "balancer=true"], "adversarial-aw": ADVERSARIAL_AW}
# Share of a budget spent before the critic starts (the adversarial recipe's warm-up).
CRITIC_AFTER = 1 / 3
PROBE_STEPS = (4, 12)
NEVER = 10**9


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def vqtok(*args: str) -> tuple[str, float]:
    """Run a vqtok command; returns its stdout and the CPU seconds (user + system) it used."""
    log("$ vqtok " + " ".join(args))
    process = subprocess.Popen([VQTOK, *args], stdout=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, ["vqtok", *args], stdout)
    return stdout, usage.ru_utime + usage.ru_stime


def speak(text: str, voice: tuple[str, int, int], path: Path) -> None:
    """espeak-ng's 22.05 kHz WAV of `text`, resampled to 16 kHz mono FLAC at `path`."""
    name, speed, pitch = voice
    wav = path.with_suffix(".wav")
    subprocess.run([ESPEAK, "-v", name, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                   check=True)
    data, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    audio = torchaudio.functional.resample(torch.from_numpy(data.mean(axis=1)), rate, SAMPLE_RATE)
    soundfile.write(path, audio.numpy(), SAMPLE_RATE, format="FLAC")
    wav.unlink()


def prepare_data(out: Path) -> tuple[Path, Path, dict]:
    """Training and held-out folders: the demo's speech, plus espeak-ng's when installed."""
    train, test = out / "train", out / "held-out"
    for folder in (train, test):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in sorted((ROOT / "demo" / "data" / "audio").iterdir()):
        shutil.copy(path, (test if path.name in HELD_OUT_SPEECH else train) / path.name)
    if ESPEAK is None:
        log("espeak-ng not found: training on the demo's speech only (6 sentences)")
    else:
        for index, text in enumerate(SENTENCES):
            held = index >= len(SENTENCES) - ESPEAK_HELD_OUT
            speak(text, VOICES[index % len(VOICES)],
                  (test if held else train) / f"espeak-{index:02d}.flac")
    seconds = {name: sum(soundfile.info(p).duration for p in folder.iterdir())
               for name, folder in (("train", train), ("held_out", test))}
    return train, test, {"espeak": ESPEAK is not None, "seconds": seconds,
                         "held_out": sorted(p.name for p in test.iterdir())}


def has_critic(recipe: str) -> bool:
    return "adversarial=msstft+mpd" in RECIPES[recipe]


def train_args(recipe: str, shards: Path, run: Path, steps: int, critic_from: int) -> list[str]:
    """`vqtok train` arguments of `recipe` for `steps` steps (the critic from `critic_from`)."""
    options = list(RECIPES[recipe])
    if has_critic(recipe):
        options += ["--set", f"adversarial_start={critic_from}"]
    return ["train", "--model", "audio-vq-16k", "--train", str(shards), "--out", str(run),
            "--steps", str(steps), "--set", f"checkpoint_every={steps}",
            "--set", f"warmup_steps={min(100, max(2, steps // 5))}",
            *COMMON_TRAIN, *RVQ_OPTIONS, *options]


def probe(recipe: str, shards: Path, out: Path) -> dict:
    """CPU seconds: the fixed cost of a run and each step's, without and with the critic."""
    cpu = {}
    for steps, critic_from in ((PROBE_STEPS[0], NEVER), (PROBE_STEPS[1], NEVER),
                               (PROBE_STEPS[1], PROBE_STEPS[0])):
        if critic_from != NEVER and not has_critic(recipe):
            continue
        run = out / f"probe-{recipe}"
        shutil.rmtree(run, ignore_errors=True)
        _, cpu[(steps, critic_from)] = vqtok(*train_args(recipe, shards, run, steps, critic_from))
        shutil.rmtree(run)
    short, long = PROBE_STEPS
    plain = (cpu[(long, NEVER)] - cpu[(short, NEVER)]) / (long - short)
    fixed = max(0.0, cpu[(short, NEVER)] - short * plain)
    critic = plain
    if (long, short) in cpu:
        critic = (cpu[(long, short)] - fixed - short * plain) / (long - short)
    result = {"fixed_cpu_s": fixed, "cpu_s_per_step": plain, "cpu_s_per_critic_step": critic}
    log(f"probe {recipe}: {json.dumps(result)}")
    return result


def plan(cost: dict, budget: float) -> tuple[int, int]:
    """Steps that fit `budget` CPU seconds, and the step from which the critic acts."""
    left = max(0.0, budget - cost["fixed_cpu_s"])
    if cost["cpu_s_per_critic_step"] == cost["cpu_s_per_step"]:
        return max(1, int(left / cost["cpu_s_per_step"])), NEVER
    warm = int(CRITIC_AFTER * left / cost["cpu_s_per_step"])
    steps = warm + int((1 - CRITIC_AFTER) * left / cost["cpu_s_per_critic_step"])
    return max(warm + 1, steps), warm


def train(recipe: str, shards: Path, out: Path, budget: float, cost: dict) -> dict:
    """Train within `budget` CPU seconds, fit the prior; returns what the run measured."""
    steps, critic_from = plan(cost, budget)
    run, record = out / recipe, out / f"{recipe}-run.json"
    if record.exists() and json.loads(record.read_text())["steps"] == steps:
        log(f"{recipe}: reusing the finished run {run}")
        return json.loads(record.read_text())
    shutil.rmtree(run, ignore_errors=True)
    started = time.time()
    stdout, cpu = vqtok(*train_args(recipe, shards, run, steps, critic_from))
    wall = time.time() - started
    summary = json.loads(stdout)
    final = Path(summary["final_model"])
    vqtok("fit-prior", str(final), str(shards), "--workers", "0")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if m.get("split") == "train"][-1]
    result = {"checkpoint": str(final), "steps": steps,
              "critic_from": critic_from if critic_from != NEVER else None,
              "train_cpu_s": round(cpu, 1), "train_wall_s": round(wall, 1),
              "model_id": json.loads((final / "config.json").read_text())["model_id"],
              "final_train_log": last}
    record.write_text(json.dumps(result, indent=2) + "\n")
    return result


def decompress_held_out(checkpoint: Path, inputs: list[Path], vqt_dir: Path, wav_dir: Path
                        ) -> None:
    """Each input compressed (all levels) and decompressed to WAV by the functions behind
    `vqtok compress` and `vqtok decompress` (in process: a command's start costs ~20 s of a
    loaded machine)."""
    vqt_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        vqt = vqt_dir / f"{path.stem}.vqt"
        vqt.unlink(missing_ok=True)
        compress_file(checkpoint, path, vqt)
        decompress_file(vqt, wav_dir / f"{path.stem}.wav")


def code_use(checkpoint: Path, inputs: list[Path]) -> dict:
    """Distinct codes per residual level over `inputs`, each coded whole with every level."""
    model = load_model(checkpoint, "cpu")
    seen = [set() for _ in range(model.num_levels)]
    tokens = 0
    for path in inputs:
        header, payload = read_vqt(compress_bytes(model, path.read_bytes())[0])
        codes = decode_codes(model, header, payload)  # (B, levels, T) int64
        tokens += codes.shape[0] * codes.shape[-1]
        for level in range(codes.shape[1]):
            seen[level].update(np.unique(codes[:, level]).tolist())
    return {"files": len(inputs), "tokens_per_level": tokens,
            "codes_used_per_level": [len(s) for s in seen], "codebook_size": model.codebook_size}


def spectrogram(path: Path, width: int) -> np.ndarray:
    """uint8 (257, width) log power spectrogram of a 16 kHz file, low frequencies at the
    bottom, 80 dB below the file's peak drawn black."""
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    power = torchaudio.transforms.Spectrogram(n_fft=512, hop_length=128)(
        torch.from_numpy(data.mean(axis=1)))
    db = 10 * torch.log10(power + 1e-10)
    db = db.clamp(min=db.max() - 80)
    scaled = ((db - db.min()) / (db.max() - db.min() + 1e-9) * 255).flip(0).byte().numpy()
    return np.asarray(Image.fromarray(scaled).resize((width, scaled.shape[0])))


def save_spectrograms(original: Path, decoded: dict[str, Path], target: Path) -> Path:
    """One PNG: the original's spectrogram above each recipe's decoded one, labelled."""
    width = min(900, max(300, int(soundfile.info(original).duration * 90)))
    panels = [("original", original), *decoded.items()]
    height, label = 257, 16
    image = Image.new("L", (width, len(panels) * (height + label)), 255)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for row, (name, path) in enumerate(panels):
        top = row * (height + label)
        draw.text((4, top + 2), f"{name} ({original.stem}, 0-8 kHz, 80 dB)", fill=0, font=font)
        image.paste(Image.fromarray(spectrogram(path, width)), (0, top + label))
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
    return target


def vqtok_rows(curves: list[dict], runs: dict) -> dict:
    """Each recipe's RD points by level count (kbps from the .vqt bytes)."""
    rows = {}
    for recipe, run in runs.items():
        curve = next(c for c in curves if run["model_id"][:8] in c["name"])
        rows[recipe] = [{"setting": s, **{k: v[i] for k, v in curve["results"].items()}}
                        for i, s in enumerate(curve["settings"])]
    return rows


def run_budget(budget: float, recipes: list[str], shards: Path, train_dir: Path, test: Path,
               costs: dict, out: Path, results: Path) -> dict:
    """Train every recipe within `budget`, then evaluate them together on the held-out set."""
    folder = out / f"budget-{int(budget)}"
    folder.mkdir(parents=True, exist_ok=True)
    runs = {recipe: train(recipe, shards, folder, budget, costs[recipe]) for recipe in recipes}
    inputs = sorted(test.iterdir())
    for recipe, run in runs.items():
        checkpoint = Path(run["checkpoint"])
        decompress_held_out(checkpoint, inputs, folder / "vqt" / recipe, folder / "wav" / recipe)
        run["codes_held_out"] = code_use(checkpoint, inputs)
        run["codes_all"] = code_use(checkpoint, sorted(train_dir.iterdir()) + inputs)
    curves = evaluate_rd([run["checkpoint"] for run in runs.values()], inputs, folder / "rd",
                         RDConfig(baselines=list(AUDIO_SWEEPS), sweeps=AUDIO_SWEEPS))
    pictures = []
    for path in inputs:
        decoded = {recipe: folder / "wav" / recipe / f"{path.stem}.wav" for recipe in recipes}
        picture = save_spectrograms(path, decoded, folder / "spectrograms" / f"{path.stem}.png")
        pictures.append(str(picture))
        if path.name in ("harbour.flac", f"espeak-{len(SENTENCES) - 1:02d}.flac"):
            results.mkdir(parents=True, exist_ok=True)
            shutil.copy(picture, results / f"audio-recipe-{int(budget)}s-{path.stem}.png")
    for plot in sorted((folder / "rd").glob("rd-*.png")):
        shutil.copy(plot, results / f"audio-recipe-{int(budget)}s-{plot.name}")
    baselines = {c["name"]: [{"setting": s, **{k: v[i] for k, v in c["results"].items()}}
                             for i, s in enumerate(c["settings"])]
                 for c in curves if c["name"] in AUDIO_SWEEPS}
    summary = {"budget_cpu_s": budget, "runs": runs, "vqtok": vqtok_rows(curves, runs),
               "baselines": baselines, "spectrograms": pictures}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/audio-recipe"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--budgets", type=float, nargs="+", default=[120.0, 1200.0],
                        help="CPU seconds of training per recipe")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES),
                        default=["baseline", "adversarial"])
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        log("warning: OMP_NUM_THREADS is not 1; CPU seconds then count several threads")
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, test, data = prepare_data(args.out)
    shards = args.out / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    vqtok("shards", "make", str(train_dir), str(shards), "--modality", "audio", "--maxcount", "4")
    costs_file = args.out / "probe.json"
    costs = json.loads(costs_file.read_text()) if costs_file.exists() else {}
    for recipe in args.recipes:
        if recipe not in costs:
            costs[recipe] = probe(recipe, shards, args.out)
    costs_file.write_text(json.dumps(costs, indent=2) + "\n")
    summary = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_average": os.getloadavg(), "data": data, "probe": costs, "budgets": {}}
    for budget in args.budgets:
        summary["budgets"][str(int(budget))] = run_budget(
            budget, args.recipes, shards, train_dir, test, costs, args.out, args.results)
        summary["load_average_after"] = os.getloadavg()
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
