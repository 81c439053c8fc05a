"""`vqtok train`: train a registry model on shards (also under torchrun).

Thin: flags and ``--set key=value`` overrides are applied on top of the TOML config, then
``vqtok.pipelines.training.train`` runs. Exit codes: 2 bad config or data (before any
step), 1 failure (NaN loss names the last good checkpoint), 130 Ctrl-C (after a checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vqtok.cli.common import exit_interrupted, print_summary, run_job
from vqtok.pipelines.training import TrainConfig, TrainingInterrupted, train


def train_command(
    config: Path | None = typer.Argument(
        None, help="TrainConfig as TOML; flags and --set override it."
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override any config key: --set lr=1e-3 --set model_options.widths=[8,8,8,8].",
    ),
    model: str | None = typer.Option(None, help="Registry model name (vqtok models list)."),
    train_shards: list[str] | None = typer.Option(
        None, "--train", help="Training shards (repeatable)."
    ),
    val: list[str] | None = typer.Option(None, help="Validation shards (repeatable)."),
    out: str | None = typer.Option(None, help="Run directory."),
    steps: int | None = typer.Option(None, help="Optimizer steps in total."),
    batch_size: int | None = typer.Option(None, help="Inputs per step and rank."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers per rank."),
    device: str | None = typer.Option(None, help="Torch device (default: cuda when present)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the run's latest checkpoint."
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Show a progress bar (default: on)."
    ),
) -> None:
    """Train a tokenizer.

    Writes config.toml, metrics.jsonl, checkpoints/, pictures/, best/ and final/.
    """
    flags = {
        "model": model,
        "train": train_shards or None,
        "val": val or None,
        "out": out,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "num_workers": workers,
        "device": device,
    }
    resolved = run_job(lambda: TrainConfig.load(config, flags, set_))
    print_summary(run_job(lambda: _train(resolved, resume, progress is not False)))


def _train(config: TrainConfig, resume: bool, progress: bool) -> Any:
    try:
        return train(config, resume=resume, progress=progress)
    except TrainingInterrupted as exc:
        exit_interrupted(str(exc))


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
