"""Token-LM benchmark (issue 21): LM coding against `--coder auto`, and LM speed on this CPU.

    OMP_NUM_THREADS=1 python benchmarks/lm_bench.py --demo demo-out --out /tmp/lm-bench

Needs the tokenizers of a demo run (`python -m vqtok.pipelines.demo --out demo-out`):
`demo-out/runs/image/final` and `demo-out/runs/audio/final`.

**Compression.** Held out as in `rd_benchmark.py`: the photos chelsea and rocket and the
sentences harbour and rainbow of demo/data. The LM is trained on the codes of the other
six files of each modality only (the demo's tokenizers saw all eight: the tokenizer is not
what is measured); `--shifts N` adds, for each training photo, its 8 rotations and flips
each shifted by N x N sub-code offsets (8 N^2 more code maps of the same photos).
Each held-out file is compressed with `--coder auto` and with
`--coder lm` (`compress_bytes`, the code of `vqtok compress`); reported are payload bits
per code, whole-file bytes and, for photos, whole-file bits per pixel.

**Speed.** Training tokens per second (8 sequences of 257 tokens per step, and the runs
above) and sampling tokens per second with and without the KV cache (one sequence of 256
tokens), for lm-tiny and lm-small.

**Generation on Fashion-MNIST** (a class-conditional LM over a 28x28 tokenizer, recognized
by the CVAE benchmark's classifier) is `benchmarks/lm_fmnist.py`: it needs the Debian
`dataset-fashion-mnist` package and hours of CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import vqtok
import vqtok.lm
from vqtok.entropy import unpack
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    decompress_bytes,
    encode_media,
)
from vqtok.pipelines.config import MediaOptions
from vqtok.pipelines.jobs.tokens import TokenManifest
from vqtok.pipelines.training.lm_config import LMTrainConfig
from vqtok.pipelines.training.lm_loop import train_lm

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"image": ("chelsea.png", "rocket.png"), "audio": ("harbour.flac", "rainbow.flac")}
FOLDERS = {"image": "images", "audio": "audio"}
# Speech is cut into the 2-second windows of the first figures, for both coders alike (an
# audio LM takes whole files too, time being counted per context window).
MEDIA = {"image": MediaOptions(), "audio": MediaOptions(window_seconds=2.0)}


@dataclass
class MemorySource:
    """Code pieces held in memory, with the interface ``train_lm`` reads (as TokenDataset)."""

    manifest: TokenManifest
    samples: list[torch.Tensor]

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> torch.Tensor:
        return self.samples[index]


def file_codes(model, path: Path) -> np.ndarray:
    """(N, *latent) codes of one media file, cut as `vqtok compress` cuts it here."""
    media = MEDIA[model.config.modality]
    codes, _ = encode_media(model, path.read_bytes(), CompressConfig(media=media))
    return codes


def augmented_codes(model, path: Path, shifts: int) -> list[np.ndarray]:
    """(1, *latent) codes of a photo's 8 rotations and flips, each shifted by `shifts` x
    `shifts` sub-code offsets (reflect-padded, so the size stays): new code maps of the
    same photo, since a shift below the tokenizer's stride changes every code."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
    x = torch.from_numpy(pixels).permute(2, 0, 1)
    size, stride = x.shape[1:], model.config.strides[0]
    padded = torch.nn.functional.pad(x[None], (stride,) * 4, mode="reflect")[0]
    offsets = [round(i * stride / shifts) for i in range(shifts)]
    views = []
    for turn in range(4):
        for flip in (False, True):
            y = torch.rot90(padded, turn, (1, 2))
            y = y.flip(2) if flip else y
            views += [y[:, dy : dy + size[0], dx : dx + size[1]]
                      for dy in offsets for dx in offsets]
    with torch.no_grad():
        return [model.encode(torch.stack(views[i : i + 32])).numpy()[:, None]
                for i in range(0, len(views), 32)]


def source_of(model, paths: list[Path], shifts: int = 0
              ) -> tuple[MemorySource, tuple[int, ...]]:
    """The files' codes as one sample each (photos: `shifts` > 0 adds augmented views),
    and the latent grid of a piece."""
    codes = [file_codes(model, path) for path in paths]
    if shifts and model.config.modality == "image":
        codes += [view for path in paths for batch in augmented_codes(model, path, shifts)
                  for view in batch]
    manifest = TokenManifest(model.model_id, model.config.modality, model.codebook_size,
                             model.num_levels, model.codebook_size, None, None, "interleaved",
                             "", "uint16", keys=[p.name for p in paths])
    grid = codes[0].shape[1:] if model.num_levels == 1 else codes[0].shape[2:]
    return MemorySource(manifest, [torch.from_numpy(c.reshape(-1)) for c in codes]), grid


def compression(modality: str, tokenizer: Path, out: Path, steps: int, context: int,
                shifts: int = 0) -> dict:
    """Train an LM on six files' codes; code the two held-out files with auto and with lm."""
    model = vqtok.load(tokenizer)
    files = sorted((ROOT / "demo" / "data" / FOLDERS[modality]).iterdir())
    train = [f for f in files if f.name not in HELD_OUT[modality]]
    held = [f for f in files if f.name in HELD_OUT[modality]]
    source, grid = source_of(model, train, shifts)
    tokens = sum(s.numel() for s in source.samples)
    config = LMTrainConfig(
        train="memory", out=str(out / f"lm-{modality}"), layout=list(grid), steps=steps,
        batch_size=8, lr=2e-3, warmup_steps=20, checkpoint_every=steps, log_every=25,
        device="cpu", model_options={"d_model": 96, "num_heads": 4, "num_layers": 3,
                                     "max_len": min(context, int(np.prod(grid))
                                                    * model.num_levels + 1),
                                     "dropout": 0.1},
    )
    summary = train_lm(config, lambda prefix: source, progress=False)
    lm = vqtok.lm.load_lm(summary.final_model)
    rows = []
    for path in held:
        data = path.read_bytes()
        media = MEDIA[modality]
        auto, auto_rates = compress_bytes(model, data, CompressConfig(coder="auto", media=media))
        started = time.monotonic()
        coded, lm_rates = compress_bytes(model, data, CompressConfig(coder="lm", media=media),
                                         lm=lm)
        seconds = time.monotonic() - started
        started = time.monotonic()
        decompress_bytes(model, coded, lm=lm)
        decode_seconds = time.monotonic() - started
        row = {"file": path.name, "codes": auto_rates.codes,
               "auto_coder": unpack(auto).header["coder"],
               "auto_payload_bits_per_code": 8 * auto_rates.payload_bytes / auto_rates.codes,
               "lm_payload_bits_per_code": 8 * lm_rates.payload_bytes / lm_rates.codes,
               "auto_file_bytes": len(auto), "lm_file_bytes": len(coded),
               "lm_compress_seconds": round(seconds, 2),
               "lm_decompress_seconds": round(decode_seconds, 2)}
        if modality == "image":
            pixels = 256 * 256
            row |= {"auto_bpp": 8 * len(auto) / pixels, "lm_bpp": 8 * len(coded) / pixels}
        rows.append(row)
    auto_bits = sum(r["auto_payload_bits_per_code"] * r["codes"] for r in rows)
    lm_bits = sum(r["lm_payload_bits_per_code"] * r["codes"] for r in rows)
    return {"tokenizer": str(tokenizer), "train_files": [f.name for f in train],
            "train_code_tokens": tokens, "augmentation_shifts": shifts, "grid": list(grid),
            "lm_steps": steps,
            "lm_train_seconds": summary.seconds,
            "lm_train_tokens_per_second": summary.tokens_per_second,
            "held_out": rows, "payload_saving_vs_auto": 1 - lm_bits / auto_bits}


def sampling_speed(preset: str, tokens: int = 256) -> dict:
    """Tokens per second sampling one sequence, with and without the KV cache."""
    lm = vqtok.lm.create_lm(preset, codebook_size=1024, layout=(tokens,),
                            max_len=tokens + 1).eval()
    rates = {}
    for cached in (True, False):
        started = time.monotonic()
        vqtok.lm.sample(lm, 1, generator=torch.Generator().manual_seed(0), use_cache=cached)
        rates["kv_cache" if cached else "no_cache"] = tokens / (time.monotonic() - started)
    return {"preset": preset, "tokens": tokens,
            **{f"{k}_tokens_per_second": round(v, 1) for k, v in rates.items()},
            "speedup": round(rates["kv_cache"] / rates["no_cache"], 2)}


def training_speed(preset: str, tokens: int = 256, batch: int = 8, steps: int = 5) -> dict:
    """Training tokens per second (forward, backward, AdamW) on random sequences."""
    from vqtok.lm.sequences import chunk_sequence, collate, lm_loss

    lm = vqtok.lm.create_lm(preset, codebook_size=1024, layout=(tokens,), max_len=tokens + 1)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    pieces = torch.randint(0, 1024, (batch, tokens))
    inputs = collate([chunk_sequence(lm.config, p, 0, tokens) for p in pieces])
    lm_loss(lm, *inputs).backward()  # warm-up
    started = time.monotonic()
    for _ in range(steps):
        optimizer.zero_grad()
        lm_loss(lm, *inputs).backward()
        optimizer.step()
    rate = steps * batch * (tokens + 1) / (time.monotonic() - started)
    return {"preset": preset, "batch": batch, "tokens": tokens + 1,
            "train_tokens_per_second": round(rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo-out"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/lm-bench"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--context", type=int, default=257,
                        help="LM context in tokens (an image's 32x32 codes are cut in chunks)")
    parser.add_argument("--shifts", type=int, default=4,
                        help="photos: sub-code shifts per axis of each of 8 rotations/flips "
                             "added to the LM's training split (0: the six photos only)")
    parser.add_argument("--modality", choices=("image", "audio"), nargs="*",
                        default=["image", "audio"])
    parser.add_argument("--only", choices=("compression", "speed"), default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    report = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{torch.get_num_threads()} torch thread(s)",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.only in (None, "compression"):
        for modality in args.modality:
            report[f"compression_{modality}"] = compression(
                modality, args.demo / "runs" / modality / "final", args.out, args.steps,
                args.context, args.shifts)
            print(json.dumps(report[f"compression_{modality}"], indent=1), flush=True)
    if args.only in (None, "speed"):
        report["sampling"] = [sampling_speed(p) for p in ("lm-tiny", "lm-small")]
        report["training"] = [training_speed(p) for p in ("lm-tiny", "lm-small")]
        print(json.dumps({k: report[k] for k in ("sampling", "training")}, indent=1), flush=True)
    (args.out / "lm-bench.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
