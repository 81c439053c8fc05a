"""Training recipes: what the benchmarks taught, as each preset's TrainConfig defaults.

A recipe holds the TrainConfig fields (top-level keys) that differ from the dataclass
defaults for one model preset, each justified by a measurement in BENCHMARKS.md. It sits
between the defaults and the user: ``TrainConfig.load`` applies a recipe key only when the
config file, the flags and ``--set`` all leave it alone, so that ``vqtok train --model
audio-vq-16k`` trains the way the benchmarks found best and any explicit choice still wins.
The resolved values are written to the run's config.toml like every other setting.
"""

from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {}


def recipe_for(model: str) -> dict[str, Any]:
    """The TrainConfig defaults of preset ``model`` (empty for a model without a recipe).

    Args:
        model: A registry model name.

    Returns:
        Field name -> value, a copy.
    """
    return dict(RECIPES.get(model, {}))
