"""`vqtok bench quantizers`: quantizers compared at matched bits, all else held fixed.

One encoder and decoder (a modality's preset), one data set, one budget (steps, batch, seed);
only the quantizer changes, at the same nominal bits per latent position (``bits``, 10 by
default, i.e. 2^10 codes):

- vq family (``vq``, ``vq-ema``, ``vq-rotation``, ``vq-cosine``): 2^bits codes, looked up in
  the preset's 8 dimensions with its usage window (and, for audio, its centring);
- ``rvq``: 2 levels of 2^(bits/2) codes each (the same bits per position, split in two),
  without quantizer dropout (every run is scored at its full rate);
- ``fsq``: the FSQ paper's levels for 2^bits (8x5x5x5 = 1000 codes for 10 bits: 0.03 bits
  short);
- ``lfq``: bits sign channels; ``simvq``: 2^bits codes in 8 dimensions, C seeded by the seed;
- ``rfsq`` (not in the default list): 2 FSQ levels of 2^(bits/2) grid points each.

Each (quantizer, seed) trains through `vqtok.pipelines.training.train` on the training data,
in its own spawned process (``isolate``) so that peak memory is its own. Then, with the
final weights: the codes of every training sample give the codebook usage and perplexity
(residual levels combined into one code of 2^bits) and the static prior (fitted as
`vqtok fit-prior` does: five folds, cross-validated uniform mix); the held-out samples are
encoded, decoded and scored (PSNR, MS-SSIM in 8-bit RGB; SI-SNR, log-mel distance) and their
codes entropy-coded with that prior, the smaller of the static and adaptive coders per sample
(`vqtok compress --coder auto`), giving the bits per position actually written.

    from vqtok.pipelines.bench.quantizers import QuantizersBenchConfig, bench_quantizers
    result = bench_quantizers(QuantizersBenchConfig(modality="image", steps=200, out="qb"))
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqtok.pipelines.config import JobConfig, MediaOptions
from vqtok.pipelines.errors import PipelineError, SampleError, UsageError

MODALITIES = {"image": "image-vq-f8", "audio": "audio-vq-16k"}
# The demo's training crops and batch (pipelines/demo/run.py), which its figures come from.
DEFAULT_CROPS = {"image": [64, 64], "audio": [8000]}
DEFAULT_QUANTIZERS = ["vq", "vq-ema", "vq-rotation", "vq-cosine", "rvq", "fsq", "lfq", "simvq"]
LOOKUP_DIM = 8  # the presets' codebook_dim: every learned codebook is looked up in 8 dims
FSQ_BITS = (8, 10, 12, 14, 16)  # FSQ's paper levels exist for these sizes only
# FSQ grids of exactly 2^b points for the two levels of rfsq (b = bits / 2).
RFSQ_LEVELS = {4: (4, 4), 5: (8, 4), 6: (8, 8), 7: (8, 4, 4), 8: (8, 8, 4)}
FOLDS = 5  # as fit-prior
MARKER = "bench-quantizers.json"


def _vq(**changes: Any) -> Callable[[dict, int, int], tuple[str, dict]]:
    def options(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
        return "vq", {**preset, "codebook_size": 2**bits, "codebook_dim": LOOKUP_DIM, **changes}

    return options


def _rvq(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
    return "rvq", {"codebook_size": 2 ** (bits // 2), "num_levels": 2,
                   "codebook_dim": LOOKUP_DIM, "quantizer_dropout": 0.0,
                   "usage_window": preset.get("usage_window", 65536)}


def _fsq(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
    return "fsq", {"codebook_size": 2**bits}


def _rfsq(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
    return "rfsq", {"levels": list(RFSQ_LEVELS[bits // 2]), "num_levels": 2,
                    "quantizer_dropout": 0.0}


def _lfq(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
    return "lfq", {"codebook_size": 2**bits}


def _simvq(preset: dict, bits: int, seed: int) -> tuple[str, dict]:
    return "simvq", {"codebook_size": 2**bits, "codebook_dim": LOOKUP_DIM, "seed": seed,
                     "usage_window": preset.get("usage_window", 65536)}


# name -> (preset's vq options, bits, seed) -> (registry name, quantizer_options). The vq
# variants start from the preset's own vq options and change one thing at a time.
VARIANTS: dict[str, Callable[[dict, int, int], tuple[str, dict]]] = {
    "vq": _vq(metric="l2", ema=False),  # codebook learned by gradient (codebook loss)
    "vq-ema": _vq(metric="l2", ema=True),
    "vq-rotation": _vq(metric="l2", ema=True, rotation_trick=True),
    "vq-cosine": _vq(metric="cosine", ema=True),
    "rvq": _rvq,
    "fsq": _fsq,
    "lfq": _lfq,
    "simvq": _simvq,
    "rfsq": _rfsq,
}


@dataclass
class QuantizersBenchConfig(JobConfig):
    """`vqtok bench quantizers`.

    modality: "image" (preset image-vq-f8) or "audio" (audio-vq-16k); ``preset`` replaces
        that preset, ``model_options`` override its architecture (e.g. narrower ``widths``).
    quantizers: names of ``VARIANTS``; bits: nominal bits per latent position.
    data: training data, a folder of media files or shard specs; empty: the demo's files.
        A folder of files is split, ``holdout`` files (evenly spaced in sorted order) held
        out; shards need ``heldout`` shards (or a media folder) to evaluate on.
    steps, batch_size, crop, lr, warmup_steps, seeds: the training budget of every run
        (crop empty: the demo's, 64x64 images or 8000 audio samples); ``train_options``
        sets any other `TrainConfig` field.
    out: folder of the shards, runs and results; resume: reuse finished runs found there.
    isolate: train each run in a fresh process, so that its peak memory is its own.
    """

    modality: str = "image"
    quantizers: list[str] = field(default_factory=lambda: list(DEFAULT_QUANTIZERS))
    bits: int = 10
    preset: str = ""
    model_options: dict[str, Any] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    holdout: int = 2
    steps: int = 200
    batch_size: int = 8
    crop: list[int] = field(default_factory=list)
    lr: float = 1e-3
    warmup_steps: int = 50
    seeds: list[int] = field(default_factory=lambda: [0])
    train_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    out: str = "bench-quantizers"
    resume: bool = False
    isolate: bool = True

    def problems(self) -> list[str]:
        """Known modality and quantizer names, bits each quantizer can match, positive budget.

        Returns:
            One message per broken rule.
        """
        found = []
        if self.modality not in MODALITIES:
            found.append(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        unknown = [name for name in self.quantizers if name not in VARIANTS]
        if unknown:
            found.append(f"unknown quantizer {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(VARIANTS)}")
        if not self.quantizers:
            found.append("quantizers is empty; name at least one of " + ", ".join(VARIANTS))
        if len(set(self.quantizers)) != len(self.quantizers):
            found.append(f"quantizers lists a name twice: {self.quantizers}")
        if self.bits not in FSQ_BITS:
            found.append(f"bits must be one of {', '.join(map(str, FSQ_BITS))} (sizes FSQ's "
                         f"levels and rvq's two equal levels can match), got {self.bits}")
        found += [f"{name} must be at least 1, got {getattr(self, name)}"
                  for name in ("steps", "batch_size", "holdout") if getattr(self, name) < 1]
        if self.warmup_steps < 0:
            found.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            found.append(f"lr must be a positive number, got {self.lr}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            found.append(f"seeds must be distinct and at least one, got {self.seeds}")
        if self.data and not _is_media_folder(self.data, self.modality) and not self.heldout:
            found.append("data given as shards needs heldout shards (or a media folder) to "
                         "evaluate on; or pass a folder of media files to split")
        return found


@dataclass
class Split:
    """Shard specs of the training and the held-out data, and where they came from."""

    train: list[str]
    heldout: list[str]
    source: str


def bench_quantizers(config: QuantizersBenchConfig,
                     log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train and score every quantizer of ``config`` for every seed.

    Args:
        config: The comparison: modality, quantizers, bits, data, budget, seeds, out folder.
        log: Called with one line per run as it starts and ends.

    Returns:
        ``{"config", "machine", "matching", "runs", "rows"}``: ``runs`` one dict per
        (quantizer, seed), ``rows`` one per quantizer with the mean over seeds and, for each
        metric, its standard deviation as ``<metric>_std``. Also written to
        ``OUT/results.json``, with the resolved config in ``OUT/config.json``.

    Raises:
        UsageError: Bad options or data, an output folder holding something else, or a
            quantizer the preset cannot take (before any training).
    """
    config.check()
    out = _output_folder(Path(config.out), config.resume)
    config.save(out / "config.json")
    (out / MARKER).write_text(json.dumps({"modality": config.modality}) + "\n")
    split = _prepare_data(config, out / "data")
    matching = {name: _matched(config, name, config.seeds[0]) for name in config.quantizers}
    runs = []
    for name in config.quantizers:
        for seed in config.seeds:
            log(f"{name} seed {seed}: training {config.steps} steps")
            run = _run_once(config, name, seed, split, out / "runs" / f"{name}-seed{seed}")
            log(f"{name} seed {seed}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in run.items() if isinstance(v, float)))
            runs.append(run)
    result = {"config": config.to_dict(), "machine": machine(), "data": split.source,
              "matching": matching, "runs": runs, "rows": summarize(runs)}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _output_folder(out: Path, resume: bool) -> Path:
    """``out``, made; refused when it holds files that are not this benchmark's (or, without
    resume, an earlier run of it)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(f"{out} is not empty and holds no earlier bench quantizers run; "
                             "choose another --out")
        if not resume:
            raise UsageError(f"{out} holds an earlier bench quantizers run; pass --resume to "
                             "reuse its finished runs, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def preset_name(config: QuantizersBenchConfig) -> str:
    """The tokenizer preset the runs share: ``preset``, or the modality's."""
    return config.preset or MODALITIES[config.modality]


def _matched(config: QuantizersBenchConfig, name: str, seed: int) -> dict[str, Any]:
    """What ``name`` runs as: registry name, options, levels x codes and nominal bits.

    Builds the quantizer through the preset, so that options it refuses are refused here,
    before any training.
    """
    import vqtok

    quantizer, options = quantizer_options(config, name, seed)
    try:
        model = vqtok.create_model(preset_name(config), **config.model_options,
                                   quantizer=quantizer, quantizer_options=options)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{name}: {preset_name(config)} cannot take {quantizer} {options}: "
                         f"{exc}") from None
    if model.config.modality != config.modality:
        raise UsageError(f"preset {preset_name(config)} is for {model.config.modality}, "
                         f"not {config.modality}")
    size, levels = model.codebook_size, model.num_levels
    codebook = f"{levels}x{size}" if levels > 1 else str(size)
    grid = model.config.quantizer_options.get("levels")
    return {"quantizer": quantizer, "options": model.config.quantizer_options,
            "codebook": codebook if grid is None else f"{codebook} ({'x'.join(map(str, grid))})",
            "bits": round(levels * math.log2(size), 3)}


def quantizer_options(config: QuantizersBenchConfig, name: str,
                      seed: int) -> tuple[str, dict[str, Any]]:
    """The registry name and quantizer_options of variant ``name`` at ``config.bits``."""
    from vqtok.models.presets import PRESETS

    preset = PRESETS.get(preset_name(config))
    base = dict(preset.quantizer_options) if preset and preset.quantizer == "vq" else {}
    return VARIANTS[name](base, config.bits, seed)


def _is_media_folder(specs: list[str], modality: str) -> bool:
    """True when ``specs`` is one folder of media files without shards in it."""
    from vqtok.pipelines.data.media import EXTENSIONS

    if len(specs) != 1 or not Path(specs[0]).is_dir():
        return False
    folder = Path(specs[0])
    if any(folder.glob("*.tar")):
        return False
    return any(p.suffix[1:].lower() in EXTENSIONS.get(modality, ()) for p in folder.rglob("*"))


def _prepare_data(config: QuantizersBenchConfig, folder: Path) -> Split:
    """Training and held-out shards: a media folder (the demo's by default) is split by
    file and packed into shards under ``folder``; shards are used as given."""
    from vqtok.pipelines.data.sources import expand_shards

    if not config.data or _is_media_folder(config.data, config.modality):
        source = Path(config.data[0]) if config.data else _demo_folder(config.modality)
        train, heldout = split_files(_media_files(source, config.modality), config.holdout)
        split = Split(_pack(train, folder / "train", config.modality),
                      _pack(heldout, folder / "heldout", config.modality),
                      f"{source}: {len(train)} files for training, held out: "
                      + ", ".join(p.name for p in heldout))
    else:
        expand_shards(config.data)  # refuses missing shards now, not in a child process
        heldout = (_pack(_media_files(Path(config.heldout[0]), config.modality),
                         folder / "heldout", config.modality)
                   if _is_media_folder(config.heldout, config.modality) else config.heldout)
        expand_shards(heldout)
        split = Split(list(config.data), list(heldout),
                      f"shards {config.data}, held out {config.heldout}")
    return split


def _demo_folder(modality: str) -> Path:
    from vqtok.pipelines.data.builtin import DATA_DIR, DATA_FOLDERS

    return DATA_DIR / DATA_FOLDERS[modality]


def _media_files(folder: Path, modality: str) -> list[Path]:
    from vqtok.pipelines.data.media import EXTENSIONS

    files = sorted(p for p in folder.rglob("*") if p.suffix[1:].lower() in EXTENSIONS[modality])
    if not files:
        raise UsageError(f"no {modality} files in {folder}")
    return files


def split_files(files: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    """(training, held-out) files: ``holdout`` of them, evenly spaced in sorted order.

    Raises:
        UsageError: Fewer than ``holdout + 1`` files.
    """
    if len(files) <= holdout:
        raise UsageError(f"{len(files)} files cannot leave {holdout} held out and some to train on")
    step = len(files) / holdout
    chosen = {int((i + 1) * step) - 1 for i in range(holdout)}
    return ([f for i, f in enumerate(files) if i not in chosen],
            [f for i, f in enumerate(files) if i in chosen])


def _pack(files: list[Path], folder: Path, modality: str) -> list[str]:
    """Shards of ``files`` in ``folder`` (made again from scratch: the split may differ)."""
    from vqtok.pipelines.data.shards import make_shards

    staged = folder.with_name(folder.name + "-files")
    for path in (folder, staged):
        shutil.rmtree(path, ignore_errors=True)
    staged.mkdir(parents=True)
    for file in files:
        shutil.copy2(file, staged / file.name)
    make_shards(staged, folder, modality, maxcount=1000)
    return [str(folder)]


def _run_once(config: QuantizersBenchConfig, name: str, seed: int, split: Split,
              run_dir: Path) -> dict[str, Any]:
    """Train and score one (quantizer, seed); a finished run is reused under ``resume``."""
    from vqtok.pipelines.bench.memory import run_in_fresh_process

    result_file = run_dir / "result.json"
    if config.resume and result_file.is_file():
        return json.loads(result_file.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
    args = (config.to_dict(), name, seed, split.train, split.heldout, str(run_dir))
    row = run_in_fresh_process(train_and_score, *args) if config.isolate else train_and_score(*args)
    result_file.write_text(json.dumps(row, indent=2) + "\n")
    return row


def train_and_score(config_data: dict, name: str, seed: int, train_shards: list[str],
                    heldout_shards: list[str], run_dir: str) -> dict[str, Any]:
    """One run, in this process: train, then score on training and held-out data.

    Plain arguments, so that it can run in a spawned process.

    Returns:
        The run's row: quantizer, seed, matched bits, quality, usage, coded bits, speed,
        memory, skipped samples.
    """
    import vqtok
    from vqtok.pipelines.bench.memory import measure_peak
    from vqtok.pipelines.training import TrainConfig, train

    config = QuantizersBenchConfig.from_dict(config_data)
    quantizer, options = quantizer_options(config, name, seed)
    steps_done: list[float] = []
    train_config = TrainConfig.from_dict({
        "model": preset_name(config),
        "model_options": {**config.model_options, "quantizer": quantizer,
                          "quantizer_options": options},
        "train": train_shards, "out": run_dir,
        "crop": config.crop or DEFAULT_CROPS[config.modality],
        "batch_size": config.batch_size, "shuffle_buffer": 16, "steps": config.steps,
        "lr": config.lr, "warmup_steps": min(config.warmup_steps, config.steps // 2),
        "seed": seed, "device": config.device, "log_every": max(1, config.steps // 10),
        "checkpoint_every": config.steps, "keep_last": 1, "tensorboard": False,
        **config.train_options,
    })
    device = torch.device(config.device)
    with measure_peak(device) as peak:
        summary = train(train_config, progress=False,
                        callbacks=[lambda step, values: steps_done.append(time.perf_counter())])
    model = vqtok.load(summary.final_model, map_location=config.device)
    codebook = model.codebook_size**model.num_levels  # residual levels as one joint code
    row: dict[str, Any] = {
        "quantizer": name, "seed": seed,
        "bits": round(model.num_levels * math.log2(model.codebook_size), 3),
        "steps": summary.steps, "final_loss": summary.loss,
        # The first step also initializes codebooks (k-means): timed from its end.
        "steps_per_s": (len(steps_done) - 1) / (steps_done[-1] - steps_done[0])
        if len(steps_done) > 1 else float("nan"),
        "peak_mib": None if peak.extra_bytes is None else peak.extra_bytes / 2**20,
        "train_seconds": summary.seconds,
    }
    skipped: list[str] = []
    counts, fold_counts, n_train = _training_codes(model, train_shards, codebook, config,
                                                   skipped)
    row.update(_usage(counts))
    row["train_positions"] = n_train
    row.update(_heldout_scores(model, heldout_shards, fold_counts, config, skipped))
    row["samples_skipped"] = summary.samples_skipped + len(skipped)
    row["skipped"] = skipped
    return row


def _samples(model: torch.nn.Module, shards: list[str],
             skipped: list[str]) -> Iterator[tuple[str, torch.Tensor, dict]]:
    """(key, pieces (N, C, *spatial) float in [-1, 1], meta) per sample, cut as `vqtok
    encode` cuts them; a sample that fails is added to ``skipped`` and logged, by key."""
    from vqtok.pipelines.data.batches import MediaBatches, PreparedBatch
    from vqtok.pipelines.data.sources import expand_shards
    from vqtok.pipelines.jobs.encode import media_config

    dataset = MediaBatches(expand_shards(shards), media_config(model, MediaOptions()),
                           batch_pieces=1)
    for event in dataset:
        if isinstance(event, SampleError):
            skipped.append(event.describe())
            print(f"skipped: {event.describe()}", flush=True)
        elif isinstance(event, PreparedBatch):
            start = 0
            for sample in event.samples:
                yield sample.key, event.pieces[start:start + sample.pieces], sample.meta
                start += sample.pieces


def joint_codes(codes: torch.Tensor, codebook_size: int, num_levels: int) -> np.ndarray:
    """codes int64 (B, *latent) or (B, Q, *latent) -> one code per position (M,) int64 in
    [0, K^Q): the levels' codes as digits of base K."""
    array = codes.cpu().numpy().astype(np.int64)
    if num_levels == 1:
        return array.reshape(-1)
    levels = np.moveaxis(array, 1, 0).reshape(num_levels, -1)
    weights = codebook_size ** np.arange(num_levels, dtype=np.int64)
    return (levels * weights[:, None]).sum(axis=0)


@torch.no_grad()
def _training_codes(model: torch.nn.Module, shards: list[str], codebook: int,
                    config: QuantizersBenchConfig,
                    skipped: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Joint code counts (K^Q,), per-level fold counts (F, Q, K) and positions, over every
    training sample (sample i in fold i mod F, as fit-prior)."""
    from vqtok.entropy import code_counts

    counts = np.zeros(codebook, dtype=np.int64)
    folds = np.zeros((FOLDS, model.num_levels, model.codebook_size), dtype=np.int64)
    positions = 0
    for index, (_, pieces, _) in enumerate(_samples(model, shards, skipped)):
        codes = model.encode(pieces.to(config.device))
        joint = joint_codes(codes, model.codebook_size, model.num_levels)
        counts += np.bincount(joint, minlength=codebook)
        folds[index % FOLDS] += code_counts(codes.cpu(), model.codebook_size, model.num_levels)
        positions += joint.size
    return counts, folds, positions


def _usage(counts: np.ndarray) -> dict[str, float]:
    """Share of the (joint) codebook used and perplexity 2^H over the training codes."""
    from vqtok.entropy import entropy

    bits = abs(entropy(counts))  # one code used gives -0.0
    return {"usage": float((counts > 0).mean()), "perplexity": 2.0**bits,
            "entropy_bits": bits}


@torch.no_grad()
def _heldout_scores(model: torch.nn.Module, shards: list[str], fold_counts: np.ndarray,
                    config: QuantizersBenchConfig, skipped: list[str]) -> dict[str, Any]:
    """Quality and written bits on the held-out samples, means over samples."""
    from vqtok.entropy import CODERS, encode_payload, ideal_bits, smoothed_prior

    prior, _ = smoothed_prior(fold_counts)
    quality: dict[str, list[float]] = {}
    coded = ideal = 0.0
    positions = samples = 0
    for _, pieces, meta in _samples(model, shards, skipped):
        x = pieces.to(config.device)
        codes = model.encode(x)
        x_hat = model.decode(codes, x.shape[2:]).clamp(-1, 1).cpu()
        for metric, value in _quality(pieces, x_hat, meta, config.modality,
                                      model.config.sample_rate).items():
            quality.setdefault(metric, []).append(value)
        array = codes.cpu().numpy()
        # `vqtok compress --coder auto`: the smaller payload of the two coders.
        best = min(CODERS, key=lambda coder: len(encode_payload(array, prior, coder)))
        coded += 8 * len(encode_payload(array, prior, best))
        ideal += ideal_bits(array, prior, best)
        positions += array.size // model.num_levels
        samples += 1
    if samples == 0:
        raise PipelineError(f"no held-out sample of {shards} could be read")
    return {**{k: statistics.fmean(v) for k, v in quality.items()},
            "coded_bits": coded / positions, "ideal_bits": ideal / positions,
            "heldout_samples": samples, "heldout_positions": positions}


def _quality(x: torch.Tensor, x_hat: torch.Tensor, meta: dict, modality: str,
             sample_rate: int | None) -> dict[str, float]:
    """PSNR and MS-SSIM of an image (1, C, H, W), or SI-SNR and log-mel distance of the
    audio windows (N, C, W) joined back to the file's length; both float in [-1, 1]."""
    from vqtok.pipelines.data.media import to_uint8
    from vqtok.pipelines.evaluation.quality import log_mel_distance, ms_ssim, psnr, si_snr

    if modality == "image":
        a, b = (to_uint8(t[0]).permute(1, 2, 0).numpy() for t in (x, x_hat))
        if a.shape[2] == 1:  # grey: compare as RGB, as the rd evaluation does
            a, b = np.repeat(a, 3, axis=2), np.repeat(b, 3, axis=2)
        return {"psnr": psnr(a, b), "ms_ssim": ms_ssim(a, b)}
    length = int(meta.get("model_length", x.shape[0] * x.shape[-1]))
    a, b = (t.mean(dim=1).reshape(-1)[:length].numpy() for t in (x, x_hat))
    return {"si_snr": si_snr(a, b), "mel_distance": log_mel_distance(a, b, sample_rate or 16000)}


METRICS = ("bits", "psnr", "ms_ssim", "si_snr", "mel_distance", "usage", "perplexity",
           "coded_bits", "ideal_bits", "steps_per_s", "peak_mib", "final_loss")


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per quantizer: each metric's mean over seeds and its sample standard
    deviation ``<metric>_std`` (0 for one seed)."""
    rows = []
    for name in dict.fromkeys(run["quantizer"] for run in runs):
        mine = [run for run in runs if run["quantizer"] == name]
        row: dict[str, Any] = {"quantizer": name, "seeds": [run["seed"] for run in mine]}
        for metric in METRICS:
            values = [run[metric] for run in mine if run.get(metric) is not None]
            if not values:
                continue
            row[metric] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


# Shown columns and their formats; a metric without a value in any row is left out.
SHOWN = {"bits": ".2f", "psnr": ".2f", "ms_ssim": ".3f", "si_snr": ".2f",
         "mel_distance": ".3f", "usage": ".3f", "perplexity": ".0f", "coded_bits": ".2f",
         "steps_per_s": ".2f", "peak_mib": ".0f"}


def table_rows(rows: list[dict[str, Any]], matching: dict[str, dict]) -> list[dict[str, str]]:
    """``rows`` as text for a table: "mean ± std" where several seeds ran."""
    shown = []
    for row in rows:
        text = {"quantizer": row["quantizer"],
                "codebook": matching.get(row["quantizer"], {}).get("codebook", "")}
        for metric, spec in SHOWN.items():
            if metric in row:
                value = format(row[metric], spec)
                if len(row["seeds"]) > 1 and metric != "bits":
                    value += f" ± {format(row[metric + '_std'], spec)}"
                text[metric] = value
        shown.append(text)
    return shown


def machine() -> dict[str, Any]:
    """Where and when the benchmark ran: CPU, threads, load, versions, UTC time."""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
