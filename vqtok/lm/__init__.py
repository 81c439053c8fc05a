"""Token LMs: decoder-only transformers over a tokenizer's codes.

Called an LM everywhere: "prior" names the entropy coder's code-frequency table.

    lm = vqtok.lm.create_lm("lm-tiny", codebook_size=1024, layout=(8, 8), num_classes=10)
    logits = lm(tokens, positions)                       # (B, L, vocab) next-token logits
    codes = vqtok.lm.sample(lm, 16, labels=[3] * 16, guidance=2.0, generator=g)
    vqtok.lm.save_lm(lm, "lm/"); lm = vqtok.lm.load_lm("lm/")
"""

from __future__ import annotations

from typing import Any

from vqtok.lm import presets as _presets  # noqa: F401  (registers the presets)
from vqtok.lm.checkpoint import load_lm, save_lm
from vqtok.lm.config import LMConfig
from vqtok.lm.layout import chunk_starts, code_positions, slot_positions
from vqtok.lm.model import KVCache, TokenLM
from vqtok.lm.sampling import sample, unflatten
from vqtok.registry import LMS


def create_lm(name: str, **overrides: Any) -> TokenLM:
    """A fresh LM of the preset ``name`` with LMConfig fields overridden.

    Args:
        name: One of ``list_lms()``.
        **overrides: LMConfig fields (codebook_size, layout, num_classes, ...).

    Returns:
        The LM, freshly initialized.

    Raises:
        KeyError: ``name`` is not a registered preset.
        ValueError: An override names no field or is out of range.
    """
    return LMS.create(name, **overrides)


def list_lms() -> list[str]:
    """The registered LM presets, sorted."""
    return LMS.names()


__all__ = [
    "KVCache",
    "LMConfig",
    "TokenLM",
    "chunk_starts",
    "code_positions",
    "create_lm",
    "list_lms",
    "load_lm",
    "sample",
    "save_lm",
    "slot_positions",
    "unflatten",
]
