"""Generation on Fashion-MNIST with a class-conditional token LM (issue 21).

    apt-get install dataset-fashion-mnist          # Debian: 60k/10k 28x28 images with labels
    OMP_NUM_THREADS=2 python benchmarks/lm_fmnist.py --out /tmp/lm_fmnist

The pipeline of the README, through the user-facing commands: `vqtok shards make` imports
the IDX files with their labels (``fmnist_vae.make_shards``), `vqtok train` trains a VQ
tokenizer for 28x28 grey images (the ``image-vq-f8`` preset cut to two stages, so f4: a 7x7
grid of codes, one channel, ``--codebook`` codes), `vqtok encode` and `vqtok export-tokens`
turn the first ``--lm-shards`` training shards (5,000 images each) and one test shard into
tokens (the code shards keep the ``.cls`` labels), and `vqtok lm train` fits a
class-conditional LM (class token first, 10% null class for classifier-free guidance);
`vqtok lm eval` gives its held-out bits per token. Then ``vqtok.lm.sample`` draws
``--samples-per-class`` code grids per class (batched, KV-cached; `vqtok lm sample` writes
one PNG per call, too slow for 10,000 images here), the tokenizer decodes them, and the
CVAE benchmark's classifier (``fmnist_vae.SmallCNN``, trained the same way: 3 epochs, seed 0)
labels them. Reported: the share recognized as their class, with and without guidance, at
the LM's middle checkpoint and at its end; the within-class spread against real test
images (``fmnist_vae.within_class_spread``); codebook use; the classifier's accuracy on real
test images and on their tokenizer reconstructions (the ceiling the tokens leave); a
10 x 10 picture grid per setting. Finished stages are kept, so an interrupted run picks up
where it stopped. Writes summary.json under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vqtok
import vqtok.lm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fmnist_vae import (  # noqa: E402  (a sibling script, not a package)
    CLASSES,
    FASHION,
    VQTOK,
    SmallCNN,
    labelled_batches,
    make_shards,
    test_spread,
    train_classifier,
    within_class_spread,
)

from vqtok.pipelines.training.data import epoch_loader  # noqa: E402

GRID = (7, 7)


def vqtok_cli(*args: str, threads: int, capture: bool = False) -> str:
    """Run one ``vqtok`` command on ``threads`` threads; its stdout when ``capture``."""
    print("$ vqtok " + " ".join(args), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([VQTOK, *args], env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    return done.stdout or ""


def timed(seconds: dict[str, float], name: str, start: float) -> None:
    """Record the wall seconds since ``start`` under ``name``."""
    seconds[name] = round(time.monotonic() - start, 1)


def start_classifier(out: Path, epochs: int) -> subprocess.Popen | None:
    """Train the classifier in a one-thread child process, unless its weights exist or an
    earlier run's child (``classifier.pid``) is still training it."""
    marker = out / "classifier.pid"
    if (out / "classifier.json").exists() or (marker.exists() and alive(marker)):
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, __file__, "--out", str(out), "--classifier-only",
                              "--classifier-epochs", str(epochs)], env=env)
    marker.write_text(f"{child.pid}\n")
    return child


def alive(marker: Path) -> bool:
    """Whether the process whose id ``marker`` holds still runs."""
    try:
        os.kill(int(marker.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def wait_classifier(out: Path, child: subprocess.Popen | None) -> None:
    """Wait until the classifier's weights are written."""
    if child is not None and child.wait():
        raise SystemExit("classifier training failed")
    while not (out / "classifier.json").exists():
        if not alive(out / "classifier.pid"):
            raise SystemExit("classifier training stopped; remove classifier.pid and rerun")
        time.sleep(10)


def classifier_job(out: Path, epochs: int) -> None:
    """The child process: ``fmnist_vae.train_classifier``, weights saved under ``out``."""
    torch.set_num_threads(1)
    start = time.monotonic()
    model, accuracy = train_classifier(out / "shards" / "train", out / "shards" / "test", epochs)
    save_file(model.state_dict(), str(out / "classifier.safetensors"))
    (out / "classifier.json").write_text(json.dumps(
        {"epochs": epochs, "test_accuracy": accuracy,
         "seconds": round(time.monotonic() - start, 1)}) + "\n")


def load_classifier(out: Path) -> tuple[SmallCNN, dict]:
    """The trained classifier (eval mode) and its record."""
    model = SmallCNN()
    model.load_state_dict(load_file(str(out / "classifier.safetensors")))
    return model.eval(), json.loads((out / "classifier.json").read_text())


def train_tokenizer(out: Path, train: Path, test: Path, args: argparse.Namespace) -> Path:
    """`vqtok train`: image-vq-f8 cut to f4 (7x7 codes), one channel, ``--codebook`` codes."""
    run = out / "runs" / "tokenizer"
    if not (run / "summary.json").exists():
        vqtok_cli(
            "train", "--model", "image-vq-f8", "--train", str(train),
            "--val", str(test / "shard-000000.tar"), "--out", str(run),
            "--steps", str(args.tokenizer_steps), "--batch-size", str(args.tokenizer_batch),
            "--lr", "2e-3", "--no-progress",
            "--set", "model_options.channels=1",
            "--set", "model_options.stage_strides=[[2, 2], [2, 2]]",
            "--set", "model_options.widths=[16, 32, 64]",
            "--set", f"model_options.quantizer_options.codebook_size={args.codebook}",
            "--set", "crop=[28, 28]", "--set", "shuffle_buffer=2048",
            "--set", f"warmup_steps={max(1, args.tokenizer_steps // 10)}",
            "--set", "precision=fp32", "--set", "tensorboard=false", "--set", "log_every=50",
            "--set", f"checkpoint_every={args.tokenizer_steps}",
            "--set", f"val_every={args.tokenizer_steps}", "--set", "val_batches=8",
            threads=1,
        )
    return run / "final"


def make_tokens(out: Path, tokenizer: Path, train: Path, test: Path, shards: int) -> None:
    """`vqtok encode` the first ``shards`` training shards and test shard 0, then
    `vqtok export-tokens` both with BOS and EOS."""
    last = f"{shards - 1:06d}"
    inputs = {"train": str(train / f"shard-{{000000..{last}}}.tar") if shards > 1
              else str(train / "shard-000000.tar"),
              "test": str(test / "shard-000000.tar")}
    for split, spec in inputs.items():
        codes, tokens = out / "codes" / split, out / "tokens" / split
        if not (codes / "encode-summary.json").exists():
            resume = ["--resume"] if codes.exists() else []
            vqtok_cli("encode", str(tokenizer), spec, str(codes), "--batch-size", "256",
                      "--workers", "0", "--no-progress", *resume, threads=2)
        if not tokens.with_suffix(".json").exists():
            vqtok_cli("export-tokens", str(codes), str(tokens), "--bos", "--eos", threads=1)


def train_lm(out: Path, args: argparse.Namespace) -> Path:
    """`vqtok lm train`: class-conditional, 7x7 layout, checkpoints at half and at the end."""
    run = out / "runs" / "lm"
    if not (run / "summary.json").exists():
        half = max(1, args.lm_steps // 2)
        vqtok_cli(
            "lm", "train", str(out / "tokens" / "train"), "--out", str(run),
            "--model", "lm-small", "--layout", "x".join(map(str, GRID)),
            "--steps", str(args.lm_steps), "--batch-size", str(args.lm_batch),
            "--lr", str(args.lm_lr), "--labels", str(out / "codes" / "train"),
            "--val", str(out / "tokens" / "test"), "--val-labels", str(out / "codes" / "test"),
            "--device", "cpu", "--no-progress",
            "--set", f"model_options.d_model={args.lm_width}",
            "--set", f"model_options.num_layers={args.lm_layers}",
            "--set", "model_options.num_heads=4",
            "--set", f"model_options.max_len={math.prod(GRID) + 1}",
            "--set", f"warmup_steps={max(1, args.lm_steps // 10)}",
            "--set", f"checkpoint_every={half}", "--set", f"val_every={half}",
            "--set", "keep_last=4", "--set", "log_every=25",
            threads=args.threads,
        )
    return run


def lm_at(run: Path, step: int | None) -> vqtok.lm.TokenLM:
    """The LM of ``run`` at its end (None) or with the weights of checkpoint ``step``."""
    lm = vqtok.lm.load_lm(run / "final")
    if step is not None:
        lm.load_state_dict(load_file(str(run / "checkpoints" / f"step-{step:08d}"
                                         / "model.safetensors")))
    return lm.eval()


def codebook_use(out: Path, codebook: int) -> dict[str, float]:
    """Share of the codebook used and code perplexity, on the exported test and train codes."""
    found = {}
    for split in ("test", "train"):
        prefix = out / "tokens" / split
        dtype = json.loads(prefix.with_suffix(".json").read_text()).get("dtype", "uint16")
        tokens = np.fromfile(prefix.with_suffix(".bin"), dtype=dtype).astype(np.int64)
        counts = np.bincount(tokens[tokens < codebook], minlength=codebook)
        p = counts[counts > 0] / counts.sum()
        found[f"{split}_used"] = float((counts > 0).mean())
        found[f"{split}_perplexity"] = float(np.exp(-(p * np.log(p)).sum()))
        found[f"{split}_codes"] = int(counts.sum())
    return found


@torch.no_grad()
def reconstruction_accuracy(tokenizer: vqtok.VQTokenizer, test: Path, classifier: SmallCNN,
                            limit: int) -> dict[str, float]:
    """The classifier on the tokenizer's reconstructions of the first ``limit`` test images,
    and their PSNR: how much of each class the 7x7 codes keep."""
    right = total = 0
    squared = 0.0
    for x, c in epoch_loader(labelled_batches(test, False), 0):
        y = tokenizer.decode(tokenizer.encode(x), size=list(x.shape[-2:])).clamp(-1, 1)
        right += int((classifier(y).argmax(dim=1) == c.argmax(dim=1)).sum())
        squared += float(((y - x) ** 2).sum())
        total += x.shape[0]
        if total >= limit:
            break
    mse = squared / (total * 28 * 28) / 4  # on [0, 1] pixels
    return {"images": total, "classifier_accuracy": right / total,
            "psnr_db": 10 * math.log10(1 / mse)}


@torch.no_grad()
def generate(lm: vqtok.lm.TokenLM, tokenizer: vqtok.VQTokenizer, per_class: int,
             guidance: float, temperature: float, seed: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                   float]:
    """``per_class`` images of every class in [-1, 1], their labels, and the seconds taken."""
    generator = torch.Generator().manual_seed(seed)
    images, labels, start = [], [], time.monotonic()
    for k in range(len(CLASSES)):
        left = per_class
        while left:
            n = min(left, 500)
            codes = vqtok.lm.sample(lm, n, labels=[k] * n, guidance=guidance,
                                    temperature=temperature, generator=generator)
            images.append(tokenizer.decode(codes, size=[28, 28]).clamp(-1, 1))
            labels.append(torch.full((n,), k))
            left -= n
    return torch.cat(images), torch.cat(labels), time.monotonic() - start


def sampled(path: Path, lm: vqtok.lm.TokenLM, tokenizer: vqtok.VQTokenizer, per_class: int,
            guidance: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``generate`` with seed 1, its images and labels kept in ``path`` for a rerun."""
    if path.exists():
        stored = load_file(str(path))
        return stored["images"], stored["labels"], float(stored["seconds"])
    images, labels, took = generate(lm, tokenizer, per_class, guidance, temperature, seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images.contiguous(), "labels": labels,
               "seconds": torch.tensor(took, dtype=torch.float64)}, str(path))
    return images, labels, took


@torch.no_grad()
def recognized(classifier: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Share labelled as their class, overall and per class, and the within-class spread."""
    predicted = torch.cat([classifier(x).argmax(dim=1) for x in images.split(1000)])
    per = {name: float((predicted[labels == k] == k).float().mean())
           for k, name in enumerate(CLASSES)}
    return {"overall": float((predicted == labels).float().mean()),
            "spread": within_class_spread(images, labels), "per_class": per}


def picture_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, columns: int = 10
                 ) -> None:
    """A PNG of ``columns`` samples per class, one row per class, 2-pixel gaps."""
    rows = len(CLASSES)
    canvas = np.full((rows * 30, columns * 30), 255, dtype=np.uint8)
    for k in range(rows):
        chosen = images[labels == k][:columns]
        for j, image in enumerate(chosen):
            pixels = ((image[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            canvas[k * 30 + 1: k * 30 + 29, j * 30 + 1: j * 30 + 29] = pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2),
                                   Image.NEAREST).save(path)


def table(rows: list[dict]) -> str:
    """Markdown table of the sampling settings."""
    lines = ["| LM step | guidance | samples per class | recognized | within-class spread | "
             "lowest class | sampling s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        low = min(r["per_class"], key=r["per_class"].get)
        lines.append(f"| {r['lm_step']} | {r['guidance']} | {r['per_class_samples']} | "
                     f"{r['overall']:.3f} | {r['spread']:.2f} | {low} "
                     f"{r['per_class'][low]:.2f} | {r['sampling_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lm_fmnist"))
    parser.add_argument("--codebook", type=int, default=256, help="tokenizer codes")
    parser.add_argument("--tokenizer-steps", type=int, default=600)
    parser.add_argument("--tokenizer-batch", type=int, default=32)
    parser.add_argument("--lm-shards", type=int, default=12,
                        help="training shards (5,000 images each) encoded for the LM")
    parser.add_argument("--lm-steps", type=int, default=1000)
    parser.add_argument("--lm-batch", type=int, default=64)
    parser.add_argument("--lm-lr", type=float, default=2e-3)
    parser.add_argument("--lm-width", type=int, default=128)
    parser.add_argument("--lm-layers", type=int, default=4)
    parser.add_argument("--samples-per-class", type=int, default=1000)
    parser.add_argument("--mid-samples-per-class", type=int, default=200,
                        help="samples per class at the LM's middle checkpoint")
    parser.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0, 3.0],
                        help="classifier-free guidance scales sampled (1: none)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--reconstructions", type=int, default=2000,
                        help="test images whose reconstructions are classified")
    parser.add_argument("--classifier-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classifier-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.classifier_only:
        classifier_job(args.out, args.classifier_epochs)
        return
    if not FASHION.is_dir():
        raise SystemExit(f"{FASHION} not found: apt-get install dataset-fashion-mnist")
    torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}
    began = time.monotonic()
    start = time.monotonic()
    train, test = make_shards(args.out)
    timed(seconds, "shards", start)
    child = start_classifier(args.out, args.classifier_epochs)
    start = time.monotonic()
    tokenizer_path = train_tokenizer(args.out, train, test, args)
    timed(seconds, "tokenizer_train", start)
    start = time.monotonic()
    make_tokens(args.out, tokenizer_path, train, test, args.lm_shards)
    timed(seconds, "encode_export", start)
    start = time.monotonic()
    run = train_lm(args.out, args)
    timed(seconds, "lm_train", start)
    lm_eval = json.loads(vqtok_cli(
        "lm", "eval", str(run / "final"), str(args.out / "tokens" / "test"),
        "--tokenizer", str(tokenizer_path), "--labels", str(args.out / "codes" / "test"),
        "--json", threads=args.threads, capture=True))
    tokenizer = vqtok.load(tokenizer_path).eval()
    lm_summary = json.loads((run / "summary.json").read_text())
    half = max(1, args.lm_steps // 2)
    drawn = []  # sampled while the classifier may still train
    for step, per_class in ((half, args.mid_samples_per_class),
                            (lm_summary["steps"], args.samples_per_class)):
        lm = lm_at(run, None if step == lm_summary["steps"] else step)
        for guidance in args.guidance:
            drawn.append((step, per_class, guidance, *sampled(
                args.out / "samples" / f"step{step}-guidance{guidance:g}-n{per_class}.safetensors",
                lm, tokenizer, per_class, guidance, args.temperature)))
            picture_grid(drawn[-1][3], drawn[-1][4],
                         args.out / f"samples-step{step}-guidance{guidance:g}.png")
    wait_classifier(args.out, child)
    classifier, classifier_record = load_classifier(args.out)
    start = time.monotonic()
    reconstructions = reconstruction_accuracy(tokenizer, test, classifier, args.reconstructions)
    timed(seconds, "reconstructions", start)
    rows = []
    for step, per_class, guidance, images, labels, took in drawn:
        row = {"lm_step": step, "guidance": guidance, "per_class_samples": per_class,
               "temperature": args.temperature, "sampling_seconds": round(took, 1),
               **recognized(classifier, images, labels)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
                   f"{args.threads} torch threads (classifier and tokenizer: 1 each)",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {k: v for k, v in vars(args).items() if k != "classifier_only"}
        | {"out": str(args.out)},
        "tokenizer": {"preset": "image-vq-f8", "grid": list(GRID),
                      "summary": json.loads((tokenizer_path.parent / "summary.json").read_text()),
                      "codebook": codebook_use(args.out, args.codebook), **reconstructions},
        "lm": {"summary": lm_summary, "eval": lm_eval,
               "train_images": args.lm_shards * 5000},
        "classifier": classifier_record,
        "test_within_class_spread": test_spread(test),
        "samples": rows,
        "seconds": seconds | {"total": round(time.monotonic() - began, 1)},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table(rows))
    print(f"classifier: real test images {classifier_record['test_accuracy']:.3f}, tokenizer "
          f"reconstructions {reconstructions['classifier_accuracy']:.3f} "
          f"({reconstructions['psnr_db']:.1f} dB); real within-class spread "
          f"{summary['test_within_class_spread']:.2f}; LM {lm_eval['lm_bits_per_token']:.3f} "
          f"bits/token (static prior {lm_eval['static_bits_per_token']:.3f})")


if __name__ == "__main__":
    main()
