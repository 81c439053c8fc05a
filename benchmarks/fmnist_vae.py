"""Continuous baselines on Fashion-MNIST (issue 6).

Test NLL of VAE, beta-VAE, ladder VAEs and CVAEs.

    apt-get install dataset-fashion-mnist          # Debian: 60k/10k 28x28 images with labels
    OMP_NUM_THREADS=1 python benchmarks/fmnist_vae.py --out /tmp/fmnist

Everything goes through the user-facing commands: `vqtok shards make` imports the IDX files,
`vqtok train` trains every model with the same budget (steps, batch, learning rate; the
Bernoulli likelihood binarizes each training image anew each epoch), and `vqtok eval nll`
reports the importance-weighted bound on the test set, binarized once with a fixed seed.
Then a small CNN classifier, trained on the same training shards, labels class-conditional
samples of both CVAEs, whose within-class spread shows whether they are varied or only
class means. Writes summary.json and summary.md under --out; runs ``--parallel`` commands
at a time, each on one thread. Finished trainings and evaluations (same checkpoint, K and
test images) are kept, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import vqtok
from vqtok.pipelines.data.media import MediaConfig
from vqtok.pipelines.data.sources import expand_shards
from vqtok.pipelines.training.data import CropBatches, epoch_loader

FASHION = Path("/usr/share/datasets/fashion-mnist")
VQTOK = str(Path(sys.executable).with_name("vqtok"))
MODELS = ("image-vae-mlp", "image-beta-vae-mlp", "image-ladder3-vae-mlp", "image-ladder5-vae-mlp",
          "image-cvae-mlp", "image-cvae-prior-mlp")
TEST_IMAGES = 10_000
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def run_all(commands: list[list[str]], parallel: int) -> list[tuple[int, float]]:
    """Run vqtok commands, ``parallel`` at a time on one thread each.

    Returns (exit code, wall seconds) of each.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running, results = list(enumerate(commands)), {}, [(0, 0.0)] * len(commands)
    while pending or running:
        while pending and len(running) < parallel:
            index, args = pending.pop(0)
            print("$ vqtok " + " ".join(args), file=sys.stderr, flush=True)
            running[index] = (
                subprocess.Popen([VQTOK, *args], env=env, stdout=subprocess.DEVNULL),
                time.time(),
            )
        for index, (process, start) in list(running.items()):
            if process.poll() is not None:
                results[index] = (process.returncode, time.time() - start)
                del running[index]
        time.sleep(1)
    return results


def train_models(
    models: list[str], train: Path, out: Path, args: argparse.Namespace
) -> dict[str, float | None]:
    """Train the models not trained before.

    Returns the trainer's seconds per model, None for a failed run.
    """
    summaries = {m: out / "runs" / m / "summary.json" for m in models}
    todo = [m for m in models if not summaries[m].exists()]
    for model, (code, _) in zip(
        todo,
        run_all([train_command(m, train, out, args) for m in todo], args.parallel),
        strict=True,
    ):
        if code:
            print(
                f"training {model} failed (exit {code}); see {out / 'runs' / model}",
                file=sys.stderr,
            )
    return {
        m: json.loads(path.read_text())["seconds"] if path.exists() else None
        for m, path in summaries.items()
    }


def make_shards(out: Path) -> tuple[Path, Path]:
    folders = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        folder = out / "shards" / split
        if not (folder / "shards.json").exists():
            subprocess.run(
                [
                    VQTOK,
                    "shards",
                    "make",
                    str(FASHION / f"{stem}-images-idx3-ubyte.gz"),
                    str(folder),
                    "--modality",
                    "image",
                    "--maxcount",
                    "5000",
                    "--labels",
                    str(FASHION / f"{stem}-labels-idx1-ubyte.gz"),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        folders[split] = folder
    return folders["train"], folders["test"]


def train_command(model: str, train: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return ["train", "--model", model, "--train", str(train), "--out", str(out / "runs" / model),
            "--steps", str(args.steps), "--batch-size", "128", "--lr", "1e-3", "--no-progress",
            "--set", "warmup_steps=200", "--set", "weight_decay=0", "--set", "precision=fp32",
            "--set", "tensorboard=false", "--set", "log_every=100", "--set", "shuffle_buffer=2048",
            "--set", f"checkpoint_every={args.steps}", "--set", "min_lr_ratio=0.1"]


def eval_command(model: str, test: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "eval",
        "nll",
        str(out / "runs" / model / "final"),
        str(test),
        "--samples",
        str(args.samples),
        "--limit",
        str(args.test_inputs),
        "--batch-size",
        "16",
        "--json",
        str(out / "nll" / f"{model}.json"),
        "--pictures",
        str(out / "pictures" / model),
    ]


class SmallCNN(nn.Sequential):
    """(B, 1, 28, 28) in [-1, 1] -> (B, 10) class logits."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def labelled_batches(shards: Path, train: bool, epoch: int = 0) -> CropBatches:
    return CropBatches(
        expand_shards([str(shards)]),
        MediaConfig("image", channels=1),
        [28, 28],
        128,
        train=train,
        shuffle_buffer=4096,
        epoch=epoch,
        condition_size=10,
    )


def train_classifier(train: Path, test: Path, epochs: int) -> tuple[SmallCNN, float]:
    """A small CNN on the grey-level training images; returns it and its test accuracy."""
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for x, c in epoch_loader(labelled_batches(train, True, epoch), 0):
            loss = nn.functional.cross_entropy(model(x), c.argmax(dim=1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, c in epoch_loader(labelled_batches(test, False), 0):
            right += int((model(x).argmax(dim=1) == c.argmax(dim=1)).sum())
            total += x.shape[0]
    return model, right / total


@torch.no_grad()
def conditional_accuracy(
    checkpoint: Path, classifier: SmallCNN, per_class: int
) -> dict[str, float]:
    """How often the classifier labels a CVAE's samples as the class they were drawn for."""
    torch.manual_seed(1)
    model = vqtok.load(checkpoint).eval()
    labels = torch.arange(10).repeat_interleave(per_class)
    samples = model.sample(labels.shape[0], labels)  # means of p(x|z,c), in [-1, 1]
    predicted = classifier(samples).argmax(dim=1)
    per = {
        name: float((predicted[labels == k] == k).float().mean()) for k, name in enumerate(CLASSES)
    }
    return {
        "overall": float((predicted == labels).float().mean()),
        "spread": within_class_spread(samples, labels),
        **per,
    }


def within_class_spread(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean L2 distance between two images of one class, averaged over the classes. A model
    that draws its class's mean image every time would be recognized well and score near 0,
    so the recognition rate is read next to this figure."""
    return float(
        torch.stack(
            [torch.pdist(images[labels == k].flatten(1)).mean() for k in labels.unique()]
        ).mean()
    )


@torch.no_grad()
def test_spread(test: Path) -> float:
    """``within_class_spread`` of the real grey-level test images."""
    batches = list(epoch_loader(labelled_batches(test, False), 0))
    return within_class_spread(
        torch.cat([x for x, _ in batches]), torch.cat([c.argmax(dim=1) for _, c in batches])
    )


def evaluated(model: str, out: Path, args: argparse.Namespace) -> bool:
    """Whether the model's NLL report exists for this checkpoint, K and number of test images."""
    report, record = out / "nll" / f"{model}.json", out / "runs" / model / "final" / "config.json"
    if not report.exists():
        return False
    r = json.loads(report.read_text())
    return (
        r["model_id"] == json.loads(record.read_text())["model_id"]
        and r["samples"] == args.samples
        and r["inputs"] == (args.test_inputs or TEST_IMAGES)
    )


def summary_table(rows: list[dict], samples: int) -> str:
    lines = [f"| model | train time (s) | test NLL = -IWAE_{samples} (nats) | negative ELBO | KL | "
             "naive estimate | active units | KL per layer |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["nll"]
        layers = ", ".join(f"{v:.1f}" for v in r["kl_per_layer"].values()) or "-"
        units = ", ".join(str(v) for v in r["active_units"].values())
        lines.append(
            f"| {row['model']} | {row['train_seconds']:.0f} | {r['nll']:.2f} | {-r['elbo']:.2f} | "
            f"{r['kl']:.2f} | {-r['naive']:.1f} | {units} | {layers} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/fmnist"))
    parser.add_argument(
        "--steps", type=int, default=5000, help="training steps per model (batch 128)"
    )
    parser.add_argument(
        "--samples", type=int, default=1000, help="K of the importance-weighted bound"
    )
    parser.add_argument(
        "--test-inputs", type=int, default=1000, help="test images evaluated (0: all 10,000)"
    )
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--classifier-epochs", type=int, default=3)
    parser.add_argument(
        "--samples-per-class",
        type=int,
        default=1000,
        help="CVAE samples drawn per class for the classifier (their share varies by about 0.5 "
        "points between seeds at 1000)",
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    if not FASHION.is_dir():
        raise SystemExit(f"{FASHION} not found: apt-get install dataset-fashion-mnist")
    torch.set_num_threads(1)
    train, test = make_shards(args.out)
    times = train_models(args.models, train, args.out, args)
    trained = [m for m in args.models if times[m] is not None]
    run_all(
        [
            eval_command(m, test, args.out, args)
            for m in trained
            if not evaluated(m, args.out, args)
        ],
        args.parallel,
    )
    reports = {m: args.out / "nll" / f"{m}.json" for m in trained}
    rows = [{"model": m, "train_seconds": times[m], "nll": json.loads(reports[m].read_text())}
            for m in trained if reports[m].exists()]
    classifier, accuracy = train_classifier(train, test, args.classifier_epochs)
    conditional = {
        m: conditional_accuracy(args.out / "runs" / m / "final", classifier, args.samples_per_class)
        for m in trained
        if "cvae" in m
    }
    summary = {"steps": args.steps, "samples": args.samples, "test_inputs": args.test_inputs,
               "classifier_test_accuracy": accuracy, "test_within_class_spread": test_spread(test),
               "models": rows, "cvae_sample_accuracy": conditional,
               "failed": [m for m in args.models if m not in trained]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = summary_table(rows, args.samples)
    extra = [f"classifier test accuracy: {accuracy:.3f}"]
    extra += [
        f"{m}: samples recognized as their class {a['overall']:.3f}, "
        f"within-class spread {a['spread']:.2f} "
        f"(test images {summary['test_within_class_spread']:.2f})"
        for m, a in conditional.items()
    ]
    (args.out / "summary.md").write_text(table + "\n\n" + "\n".join(extra) + "\n")
    print(table + "\n\n" + "\n".join(extra))


if __name__ == "__main__":
    main()
