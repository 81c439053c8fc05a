"""`vqtok lm train|eval|sample`: the token LM over a tokenizer's exported codes.

Thin: flags become a config and one call into `vqtok.pipelines`; library errors become a
one-line message and exit 2 (bad input) or 1 (failure), Ctrl-C during training exits 130
after a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vqtok.cli.common import CONFIG_HELP, SET_HELP, default_of, out, print_summary, run_job
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.evaluation.lm_eval import LMEvalConfig, evaluate_lm
from vqtok.pipelines.jobs.sample import SampleConfig, sample_media
from vqtok.pipelines.jobs.tokens import TokenDataset
from vqtok.pipelines.training import TrainingInterrupted
from vqtok.pipelines.training.lm_config import LMTrainConfig
from vqtok.pipelines.training.lm_loop import train_lm

lm_app = typer.Typer(help="Token LMs: train on exported tokens, evaluate, sample media.",
                     no_args_is_help=True)
T = LMTrainConfig


def parse_grid(text: str | None, flag: str) -> list[int] | None:
    """``"7x7"`` -> [7, 7]; None stays None; anything else is a usage error."""
    if text is None:
        return None
    try:
        sizes = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise UsageError(f"{flag} must look like 7x7, 50 or 4x8x8, not {text!r}") from None
    if not 1 <= len(sizes) <= 3 or min(sizes) < 1:
        raise UsageError(f"{flag} must be 1 to 3 positive sizes, not {text!r}")
    return sizes


def open_tokens(prefix: str) -> TokenDataset:
    """The export at ``prefix``, for ``train_lm``."""
    return TokenDataset(prefix, 1)


@lm_app.command("train")
def train(
    tokens: str | None = typer.Argument(None, help="export-tokens prefix of the training set."),
    out_dir: str | None = typer.Option(None, "--out", help="Run directory."),
    model: str | None = typer.Option(
        None, help=f"LM preset: lm-tiny, lm-small, lm-base (default: {default_of(T, 'model')})."
    ),
    steps: int | None = typer.Option(None, help=f"Steps (default: {default_of(T, 'steps')})."),
    val: str | None = typer.Option(None, help="export-tokens prefix of held-out samples."),
    labels: str | None = typer.Option(
        None, help="Code shards with .cls classes: trains a class-conditional LM."
    ),
    val_labels: str | None = typer.Option(
        None, help="Code shards with the .cls classes of the --val samples."
    ),
    layout: str | None = typer.Option(
        None, help="Latent grid of one image, e.g. 7x7, or a video's TxHxW (audio: none)."
    ),
    batch_size: int | None = typer.Option(None, help="Sequences per step and rank."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    device: str | None = typer.Option(None, help="Torch device (default: cuda when present)."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run's last checkpoint."),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Show a progress bar (default: on)."
    ),
) -> None:
    """Train a token LM; writes config.toml, metrics.jsonl, checkpoints/, final/ and best/."""
    def job() -> Any:
        flags = {"train": tokens, "out": out_dir, "model": model, "steps": steps, "val": val,
                 "labels": labels, "val_labels": val_labels,
                 "layout": parse_grid(layout, "--layout"), "batch_size": batch_size, "lr": lr,
                 "device": device}
        options = LMTrainConfig.load(config, flags, set_)
        try:
            return train_lm(options, open_tokens, resume=resume, progress=progress is not False)
        except TrainingInterrupted as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(130) from None

    print_summary(run_job(job))


@lm_app.command("eval")
def evaluate(
    lm: Path = typer.Argument(..., help="LM checkpoint directory."),
    tokens: str = typer.Argument(..., help="export-tokens prefix of held-out samples."),
    tokenizer: str | None = typer.Option(
        None, help="Tokenizer checkpoint whose prior the static/adaptive figures use "
        "(default: a uniform prior)."
    ),
    labels: str | None = typer.Option(None, help="Code shards with .cls (conditional LMs)."),
    limit: int | None = typer.Option(None, help="Evaluate the first N samples (default: all)."),
    batch_size: int | None = typer.Option(None, help="Sequences per forward."),
    device: str | None = typer.Option(None, help="Torch device (default: cpu)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Held-out bits per token and per sample: the LM beside the static prior and adaptive coder."""
    def job() -> Any:
        flags = {"tokenizer": tokenizer, "labels": labels, "limit": limit,
                 "runtime.batch_size": batch_size, "runtime.device": device}
        return evaluate_lm(lm, tokens, LMEvalConfig.load(config, flags, set_))

    report = run_job(job)
    if json_out:
        print_summary(report)
        return
    table = Table("model", "bits per token", "bits per sample",
                  title=f"{report.samples} samples, {report.code_tokens} code tokens")
    for name, key in (("LM", "lm"), ("static prior", "static"), ("adaptive coder", "adaptive")):
        table.add_row(name, f"{getattr(report, f'{key}_bits_per_token'):.4f}",
                      f"{getattr(report, f'{key}_bits_per_sample'):.1f}")
    out.print(table)
    out.print(f"LM saves {report.saving_vs_best_coder:.1%} against the better coder")


@lm_app.command("sample")
def sample(
    lm: Path = typer.Argument(..., help="LM checkpoint directory."),
    tokenizer: Path = typer.Option(..., help="The tokenizer checkpoint the LM was trained on."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the media files."),
    num: int | None = typer.Option(None, help="Files to write (default: 8)."),
    class_: list[int] = typer.Option(
        [], "--class", help="Class of the samples (repeatable: cycled over the files)."
    ),
    temperature: float | None = typer.Option(None, help="Softmax temperature (default: 1)."),
    top_k: int | None = typer.Option(None, help="Keep the k likeliest codes (default: 0, all)."),
    guidance: float | None = typer.Option(
        None, help="Classifier-free guidance scale (default: 1, none); needs --class."
    ),
    size: str | None = typer.Option(None, help="Image or video frame size HxW."),
    seconds: float | None = typer.Option(None, help="Audio length per file."),
    seed: int | None = typer.Option(None, help="Random seed (default: 0)."),
    device: str | None = typer.Option(None, help="Torch device (default: cpu)."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Sample codes from the LM (KV-cached) and decode them to PNG, WAV or MP4 files."""
    def job() -> Any:
        grid = parse_grid(size, "--size")
        if grid is not None and len(grid) != 2:
            raise UsageError(f"--size must look like HxW, not {size!r}")
        flags = {"num": num, "classes": class_ or None, "temperature": temperature,
                 "top_k": top_k, "guidance": guidance, "size": grid, "seconds": seconds,
                 "seed": seed, "runtime.device": device}
        return sample_media(lm, tokenizer, out_dir, SampleConfig.load(config, flags, set_))

    print_summary(run_job(job))


def register(app: typer.Typer) -> None:
    app.add_typer(lm_app, name="lm")
