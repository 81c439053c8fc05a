"""Named LM presets, registered in ``vqtok.registry.LMS``.

The sizes follow GPT-style ratios (4x MLP, 64-wide heads where the width allows):
``lm-tiny`` trains in minutes on a CPU (tests, the benchmark), ``lm-small`` is for a CPU
run of hours or a GPU run of minutes, ``lm-base`` for a GPU. The tokenizer's side of the
config (codebook size, levels, layout, classes) is given when the LM is created for its
tokens, e.g. ``create_lm("lm-tiny", codebook_size=1024, layout=(8, 8))``.
"""

from __future__ import annotations

from typing import Any

from vqtok.lm.config import LMConfig
from vqtok.lm.model import TokenLM
from vqtok.registry import register_lm

PRESETS = {
    "lm-tiny": LMConfig(preset="lm-tiny", d_model=64, num_layers=2, num_heads=2, max_len=256,
                        output_bias=True),
    "lm-small": LMConfig(preset="lm-small", d_model=256, num_layers=6, num_heads=4,
                         max_len=1024, output_bias=True),
    "lm-base": LMConfig(preset="lm-base", d_model=512, num_layers=12, num_heads=8,
                        max_len=2048, output_bias=True),
}


def _builder(name: str):
    def build(**overrides: Any) -> TokenLM:
        return TokenLM(PRESETS[name].with_overrides(**overrides))

    build.__name__ = name
    build.__doc__ = f"A fresh {name} TokenLM; keyword arguments override LMConfig fields."
    return build


for _name in PRESETS:
    register_lm(_name)(_builder(_name))
