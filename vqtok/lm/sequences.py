"""Training sequences of a TokenLM: a chunk of a piece's codes, framed and positioned.

A chunk (start, count) of a piece's code tokens becomes the inputs
``[start token, codes[start : start + count - 1]]`` and the targets
``codes[start : start + count]``; the last chunk of a piece adds one slot that predicts EOS.
Batches pad with ``IGNORE`` targets, which the loss skips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtok.lm.config import LMConfig
from vqtok.lm.layout import slot_positions
from vqtok.lm.model import TokenLM

IGNORE = -100


def chunk_sequence(config: LMConfig, codes: Tensor, start: int, count: int,
                   label: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The (inputs, targets, positions) of one chunk of a piece.

    Args:
        config: The LM's config.
        codes: int64 (n,) the piece's code tokens (interleaved levels): n = piece_tokens, or
            with ``relative_time`` any whole number of time steps.
        start: First code token of the chunk (a multiple of Q).
        count: Code tokens in the chunk, at most ``max_len - 1``.
        label: The piece's class, None for the null class (or an unconditional LM).

    Returns:
        inputs int64 (L,), targets int64 (L,), positions int64 (L, axes + 1), where
        L = count, plus 1 when the chunk ends the piece (the EOS slot).
    """
    eos = start + count == codes.shape[0]
    first = torch.tensor([config.start_id(label)], dtype=torch.int64)
    inputs = torch.cat([first, codes[start : start + count - 1 + eos]])
    targets = codes[start : start + count]
    if eos:
        targets = torch.cat([targets, torch.tensor([config.eos_id])])
    positions = slot_positions(config.layout, config.layout, config.num_levels, start, count,
                               eos=eos, relative_time=config.relative_time)
    return inputs, targets, positions


def collate(items: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack sequences of different lengths, padding with ``IGNORE`` targets.

    Args:
        items: (inputs, targets, positions) as ``chunk_sequence`` returns them.

    Returns:
        inputs (B, L), targets (B, L), positions (B, L, axes + 1), all int64.
    """
    length = max(item[0].shape[0] for item in items)

    def pad(t: Tensor, value: int) -> Tensor:
        return F.pad(t, (0, 0) * (t.dim() - 1) + (0, length - t.shape[0]), value=value)

    return (torch.stack([pad(i, 0) for i, _, _ in items]),
            torch.stack([pad(t, IGNORE) for _, t, _ in items]),
            torch.stack([pad(p, 0) for _, _, p in items]))


def lm_loss(model: TokenLM, inputs: Tensor, targets: Tensor, positions: Tensor) -> Tensor:
    """Mean next-token cross-entropy in nats over the non-ignored targets.

    Args:
        model: The LM.
        inputs, targets: int64 (B, L).
        positions: int64 (B, L, axes + 1) or (L, axes + 1).

    Returns:
        The scalar loss.
    """
    logits = model(inputs, positions)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)
