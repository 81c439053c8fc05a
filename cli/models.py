"""`vqtok models`: the registered presets (tokenizers, VAE baselines, token LMs)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

import vqtok
from vqtok.cli.common import print_table

COLUMNS = ("name", "modality", "strides", "quantizer", "codebook", "params", "rate")
LM_COLUMNS = ("name", "width", "layers", "heads", "context", "params")


def _rate(config: vqtok.TokenizerConfig) -> str:
    if config.sample_rate:
        return f"{config.sample_rate} Hz"
    if config.fps:
        return f"{config.fps:g} fps"
    return "-"


def preset_rows() -> list[dict[str, str]]:
    """One row per preset: modality, strides per axis, codebook, parameter count, rate.

    Returns:
        Rows keyed by `COLUMNS`, in the registry's order.
    """
    rows = []
    for name in vqtok.list_models():
        model = vqtok.create_model(name)
        params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
        rate = _rate(model.config) if isinstance(model.config, vqtok.TokenizerConfig) else "-"
        rows.append(dict(zip(COLUMNS, (name, *_geometry(model), params, rate), strict=True)))
    return rows


def lm_rows() -> list[dict[str, str]]:
    """One row per token-LM preset (``vqtok.lm.create_lm``): size and context.

    Returns:
        Rows keyed by `LM_COLUMNS`, sorted by name.
    """
    import vqtok.lm  # the LM presets register on import

    rows = []
    for name in vqtok.lm.list_lms():
        lm = vqtok.lm.create_lm(name)
        config = lm.config
        params = f"{sum(p.numel() for p in lm.parameters()) / 1e6:.2f}M"
        values = (name, config.d_model, config.num_layers, config.num_heads, config.max_len,
                  params)
        rows.append(dict(zip(LM_COLUMNS, map(str, values), strict=True)))
    return rows


def presets_table(rows: list[dict[str, str]], title: str = "vqtok model presets") -> Table:
    """The rows as a Rich table whose names never wrap or get cut."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, no_wrap=True, justify="left" if column in (
            "name", "modality", "strides", "quantizer", "rate") else "right")
    for row in rows:
        table.add_row(*row.values())
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
    def models(
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    ) -> None:
        """List the presets: models for `vqtok train` and token LMs for `vqtok lm train`."""
        rows, lms = preset_rows(), lm_rows()
        if as_json:
            typer.echo(json.dumps({"models": rows, "lms": lms}, indent=2))
            return
        print_table(presets_table(rows))
        print_table(presets_table(lms, "token LM presets (vqtok lm train --model)"))
