"""Train an image preset for a fixed wall-clock budget on real photos; report PSNR and code use.

    python benchmarks/train_image_preset.py --seconds 180

Photos: scikit-image's bundled public-domain/CC0 samples when scikit-image is installed
(two held out for evaluation), else the four 64x64 test photos of tests/data/images
upscaled (the first held out). Training goes through the project's trainer
(``vqtok.pipelines.training``) on random crops; the run stops at a step boundary once the
time is up. Evaluation codes the held-out photos whole (``encode`` then ``decode``).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqtok.pipelines import make_shards
from vqtok.pipelines.training import TrainConfig, TrainingInterrupted
from vqtok.pipelines.training.loop import Trainer

TEST_PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "images"
TRAIN_SAMPLES = ("astronaut", "coffee", "camera", "retina", "hubble_deep_field",
                 "immunohistochemistry", "brick", "gravel")
HELD_OUT_SAMPLES = ("chelsea", "rocket")


def sample_photos() -> tuple[list[Image.Image], list[Image.Image]]:
    """(training, held-out) RGB photos."""
    try:
        from skimage import data
    except ImportError:
        photos = [Image.open(p).convert("RGB") for p in sorted(TEST_PHOTOS.glob("*.png"))]
        return photos[1:], photos[:1]

    def load(name: str) -> Image.Image:
        return Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")

    return [load(n) for n in TRAIN_SAMPLES], [load(n) for n in HELD_OUT_SAMPLES]


def resized(photo: Image.Image, short_side: int) -> Image.Image:
    scale = short_side / min(photo.size)
    return photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)


def to_tensor(photo: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float in [-1, 1]."""
    array = np.array(photo, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


@torch.no_grad()
def code_photos(model: torch.nn.Module, photos: list[Image.Image]) -> tuple[float, torch.Tensor]:
    """Code each photo whole (``encode`` then ``decode``): PSNR in dB over all of them
    (peak-to-peak 2 on [-1, 1]) and every code produced, int64 (tokens,)."""
    model.eval()
    squared, count, codes = 0.0, 0, []
    for photo in photos:
        x = to_tensor(photo)
        code = model.encode(x)
        x_hat = model.decode(code, x.shape[2:]).clamp(-1, 1)
        squared += float((x_hat - x).pow(2).sum())
        count += x.numel()
        codes.append(code.flatten())
    return 10 * math.log10(4.0 / (squared / count)), torch.cat(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="training wall-clock budget")
    parser.add_argument("--model", default="image-vq-f8")
    parser.add_argument("--size", type=int, default=256, help="short side of the training photos")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000, help="schedule length (cosine decay)")
    parser.add_argument(
        "--set", action="append", default=[], help="TrainConfig key=value overrides"
    )
    args = parser.parse_args()

    train_photos, held_out = sample_photos()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for i, photo in enumerate(train_photos):
            resized(photo, args.size).save(folder / f"{i:02d}.png")
        make_shards(folder, Path(tmp) / "shards", "image", maxcount=4)
        config = TrainConfig(
            model=args.model, train=[str(Path(tmp) / "shards")], out=str(Path(tmp) / "run"),
            crop=[args.crop, args.crop], batch_size=args.batch_size, shuffle_buffer=4,
            steps=args.steps, lr=args.lr, warmup_steps=args.warmup, log_every=50,
            checkpoint_every=10**9, tensorboard=False, precision="fp32",
        ).with_overrides(args.set)
        trainer = Trainer(config, progress=False)
        start = time.monotonic()
        last: dict[str, float] = {}

        def stop_when_time_is_up(step: int, values: dict[str, float]) -> None:
            last.update(values, step=step)
            trainer.stop_requested = time.monotonic() - start >= args.seconds

        try:
            trainer.run([stop_when_time_is_up])
        except TrainingInterrupted:
            pass  # the time budget ran out; the step that ended it is complete
        finally:
            trainer.close()
        seconds = time.monotonic() - start
        usage = trainer.model.quantizer.usage()
        model = trainer.model
    held_out_psnr, _ = code_photos(model, [resized(p, args.size) for p in held_out])
    train_psnr, train_codes = code_photos(model, [resized(p, args.size) for p in train_photos])
    used = train_codes.unique().numel()
    report = {
        "model": args.model, "steps": int(last.get("step", 0)), "seconds": round(seconds, 1),
        "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr,
        "train_photos": len(train_photos), "held_out_photos": len(held_out),
        "held_out_psnr_db": round(held_out_psnr, 2), "train_psnr_db": round(train_psnr, 2),
        "train_tokens": train_codes.numel(), "train_used_fraction": used / model.codebook_size,
        "train_unused_codes": model.codebook_size - used,
        "window_used_fraction": usage["used_fraction"], "window_dead_codes": usage["dead_codes"],
        "window_perplexity": round(usage["perplexity"], 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
