"""What users read: help texts as written, tables with whole names at any width."""

from __future__ import annotations

import json
import re

import pytest
import typer.main
from typer.testing import CliRunner

import vqtok
import vqtok.lm
from vqtok.cli.app import app

runner = CliRunner()


def _commands(group, prefix=()):
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            yield from _commands(sub, (*prefix, name))
        else:
            yield (*prefix, name), sub


COMMANDS = dict(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_renders_every_option_text_literally(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    flat = re.sub(r"[\s│]+", "", result.output)
    for param in COMMANDS[path].params:
        if getattr(param, "help", None):
            written = param.help.replace("\\[", "[")  # as in the source, before escaping
            assert re.sub(r"\s+", "", written) in flat, param.name
    assert "<bool>" not in result.output  # flags take no value


def test_brackets_survive_in_help():
    result = runner.invoke(app, ["encode", "--help"], env={"COLUMNS": "200"})
    assert "vqtok[ray]" in result.output


@pytest.mark.parametrize("columns", ["40", "80", "300"])
def test_models_table_keeps_whole_names_at_any_width(columns):
    # CliRunner's output is not a terminal: the piped case.
    result = runner.invoke(app, ["models"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    names = {line.split("│")[1].strip() for line in result.output.splitlines()
             if line.startswith("│")}
    assert names == set(vqtok.list_models()) | set(vqtok.lm.list_lms())


def test_models_json_lists_every_preset():
    result = runner.invoke(app, ["models", "--json"])
    listing = json.loads(result.output)
    assert [row["name"] for row in listing["models"]] == vqtok.list_models()
    assert {"modality", "codebook", "params"} <= set(listing["models"][0])
    assert [row["name"] for row in listing["lms"]] == vqtok.lm.list_lms()
