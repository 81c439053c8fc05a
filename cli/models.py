"""`vqtok models`: the registered tokenizer presets."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

import vqtok


def _rate(config: vqtok.TokenizerConfig) -> str:
    if config.sample_rate:
        return f"{config.sample_rate} Hz"
    if config.fps:
        return f"{config.fps:g} fps"
    return "-"


def presets_table() -> Table:
    """One row per preset: modality, strides per axis, codebook, parameter count."""
    table = Table(title="vqtok model presets")
    for column in ("name", "modality", "strides", "quantizer", "codebook", "params", "rate"):
        table.add_column(
            column, no_wrap=True, justify="right" if column in ("codebook", "params") else "left"
        )
    for name in vqtok.list_models():
        model = vqtok.create_model(name)
        params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
        table.add_row(name, *_geometry(model), params, _rate(model.config))
    return table


def _geometry(model) -> tuple[str, str, str, str]:
    """(modality, strides, quantizer, codebook) cells; continuous models show their
    family and likelihood where a tokenizer shows its quantizer, and no codebook."""
    config = model.config
    if isinstance(config, vqtok.TokenizerConfig):
        levels = f" x {model.num_levels}" if model.num_levels > 1 else ""
        strides = "x".join(str(s) for s in config.strides)
        return config.modality, strides, config.quantizer, f"{model.codebook_size}{levels}"
    strides = "x".join(str(s) for s in config.strides) or "flat"
    return config.modality, strides, f"{config.family} ({config.likelihood})", "-"


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models() -> None:
        """List the tokenizer presets usable with `vqtok.create_model(name)`."""
        Console().print(presets_table())
