"""Where each token of a sequence sits: grid coordinates and residual level.

Residual levels are **interleaved**: the Q codes of a position follow each other, coarse
first, and then the next position (raster order, time-major for video), which is what
``vqtok export-tokens`` writes by default. We chose this over a depth transformer
(RQ-Transformer) and over a delay pattern (MusicGen) because

- it is the exact autoregressive factorization p(code_t | all codes before t): the entropy
  coder needs exactly that, and a delay pattern predicts a position's fine levels without
  having seen its coarse ones, which costs bits;
- the presets have Q <= 4, so the sequence is at most 4x longer, and one model with one
  KV cache serves training, sampling and coding;
- a depth transformer pays off when Q is large (RQ-Transformer's Q = 4..8 at 256 codes
  per image), at the price of a second model and cache; nothing here needs it yet.

Each slot of the transformer's input is embedded with the token it holds plus the position
of the token it **predicts** (its grid coordinates and level). A sequence that starts in
the middle of a piece (a chunk of a long one) thus knows where it starts without a
separate offset token, and the start token (BOS or class) predicts the first position.

With ``relative_time`` (audio and video LMs), the time coordinate counts from the chunk's
first time step instead: every chunk is a fresh sequence anyway, so a chunk an hour into a
recording looks like one at its start, and one LM trains on, codes and samples sequences
of any length. Rows and columns stay absolute.
"""

from __future__ import annotations

import math

import torch

NONE = 0  # row 0 of every position table: "no position" (the EOS target)


def code_positions(
    layout: tuple[int, ...], grid: tuple[int, ...], num_levels: int, start: int, count: int,
    relative_time: bool = False,
) -> torch.Tensor:
    """Position indices of code tokens ``start .. start + count - 1`` of a piece.

    Args:
        layout: The LM's grid sizes; coordinates beyond them are clamped.
        grid: The piece's actual latent grid, of the same number of axes.
        num_levels: Q.
        start: Index of the first code token within the piece.
        count: How many.
        relative_time: Count axis 0 from the time step of code token ``start``.

    Returns:
        int64 (count, axes + 1): per axis the coordinate + 1, then the level + 1 (0 is
        reserved for "none").

    Raises:
        ValueError: ``grid`` has another number of axes than ``layout``.
    """
    if len(grid) != len(layout):
        raise ValueError(f"a grid of {len(grid)} axes does not fit the LM's {len(layout)}")
    index = torch.arange(start, start + count, dtype=torch.int64)
    position, level = index // num_levels, index % num_levels
    columns = []
    for axis in reversed(range(len(grid))):
        # Axis 0 is outermost: its coordinate is what the inner axes leave (no wrap-around).
        coordinate = position % grid[axis] if axis else position
        position = position // grid[axis]
        if axis == 0 and relative_time:
            coordinate = coordinate - start // num_levels // math.prod(grid[1:])
        columns.append(coordinate.clamp(max=layout[axis] - 1) + 1)
    return torch.stack([*reversed(columns), level + 1], dim=1)


def slot_positions(
    layout: tuple[int, ...], grid: tuple[int, ...], num_levels: int, start: int, count: int,
    eos: bool = False, relative_time: bool = False,
) -> torch.Tensor:
    """Position indices of the input slots that predict codes ``start .. start + count - 1``.

    Slot 0 holds the start token, slot i the code ``start + i - 1``; slot i is embedded with
    the position of code ``start + i``. With ``eos``, one more slot predicts EOS (no
    position).

    Args:
        layout, grid, num_levels, start, count, relative_time: As for ``code_positions``.
        eos: Append the slot that predicts EOS.

    Returns:
        int64 (count + eos, axes + 1).
    """
    positions = code_positions(layout, grid, num_levels, start, count, relative_time)
    if eos:
        positions = torch.cat([positions, torch.full((1, positions.shape[1]), NONE)])
    return positions


def chunk_starts(total: int, max_len: int, num_levels: int) -> list[tuple[int, int]]:
    """(start, count) of the chunks a piece of ``total`` code tokens is cut into.

    Each chunk is a fresh sequence (start token + codes) of at most ``max_len`` tokens,
    beginning at a position boundary (a multiple of Q), so that training windows,
    sampling and coding cut pieces alike.

    Args:
        total: Code tokens of the piece.
        max_len: The LM's context, the start token included.
        num_levels: Q.

    Returns:
        The chunks in order; one when the piece fits.
    """
    size = ((max_len - 1) // num_levels) * num_levels or max_len - 1
    return [(start, min(size, total - start)) for start in range(0, total, size)]


def chunk_steps(max_len: int, frame_tokens: int) -> int:
    """The most time steps one chunk's code tokens can touch (a relative-time layout[0]).

    Args:
        max_len: The LM's context, the start token included.
        frame_tokens: Code tokens of one time step: prod(grid[1:]) * Q.

    Returns:
        Steps: a chunk may start inside one and end inside another.
    """
    return -(-(max_len - 1) // frame_tokens) + 1


def grid_tokens(grid: tuple[int, ...], num_levels: int) -> int:
    """Code tokens of one piece of ``grid``: prod(grid) * Q."""
    return math.prod(grid) * num_levels
