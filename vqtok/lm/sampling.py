"""Sampling code sequences from a TokenLM: temperature, top-k, classifier-free guidance.

Every piece is generated chunk by chunk (``vqtok.lm.layout.chunk_starts``), each chunk a
fresh sequence that starts with the start token, as in training and coding. Only codes are
sampled (EOS and the special tokens are masked), so every sample decodes. With a fixed
``torch.Generator`` the result is reproducible, and the KV-cached path gives the same codes
as the uncached one (which recomputes the whole prefix every step; kept for tests and the
speed benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vqtok.lm.layout import chunk_starts, grid_tokens, slot_positions
from vqtok.lm.model import KVCache, TokenLM


@torch.inference_mode()
def sample(
    model: TokenLM,
    num: int,
    grid: Sequence[int] | None = None,
    *,
    labels: Sequence[int] | Tensor | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Sample ``num`` pieces of codes.

    Args:
        model: The LM, in eval mode.
        num: Pieces to sample.
        grid: The latent grid of a piece; the LM's layout when None.
        labels: (num,) classes for a conditional LM; None samples unconditionally (the
            null class).
        temperature: Divides the logits; > 0.
        top_k: Keep the k likeliest codes (0 keeps all).
        guidance: Classifier-free guidance scale w: logits = u + w (c - u), u being the
            null-class logits; 1 is plain conditional sampling. Needs ``labels``.
        generator: Source of randomness (on the model's device).
        use_cache: Use the KV cache (one slot per step) instead of recomputing.

    Returns:
        int64 (num, Q, *grid) codes, or (num, *grid) when Q == 1, on the model's device.

    Raises:
        ValueError: For a bad temperature, top_k, guidance, labels or grid.
    """
    config = model.config
    grid = tuple(grid or config.layout)
    _check(model, num, grid, labels, temperature, top_k, guidance)
    device = model.token.weight.device
    starts = _start_tokens(model, num, labels, guidance, device)
    total = grid_tokens(grid, config.num_levels)
    out = torch.empty(num, total, dtype=torch.int64, device=device)
    for start, count in chunk_starts(total, config.max_len, config.num_levels):
        positions = slot_positions(config.layout, grid, config.num_levels, start, count,
                                   relative_time=config.relative_time).to(device)
        out[:, start : start + count] = _chunk(
            model, starts, positions, (temperature, top_k, guidance), generator, use_cache
        )
    return unflatten(out, grid, config.num_levels)


def unflatten(tokens: Tensor, grid: tuple[int, ...], num_levels: int) -> Tensor:
    """Interleaved tokens (N, prod(grid) * Q) -> codes (N, Q, *grid), or (N, *grid) if Q == 1.

    Args:
        tokens: int64 code tokens, levels of each position together.
        grid: The latent grid.
        num_levels: Q.

    Returns:
        The codes in the tokenizer's layout.
    """
    codes = tokens.reshape(tokens.shape[0], *grid, num_levels)
    return codes[..., 0] if num_levels == 1 else codes.movedim(-1, 1).contiguous()


def _check(model: TokenLM, num: int, grid: tuple[int, ...], labels, temperature: float,
           top_k: int, guidance: float) -> None:
    config = model.config
    if num < 1:
        raise ValueError(f"num must be at least 1, got {num}")
    if len(grid) != len(config.layout) or any(n < 1 for n in grid):
        raise ValueError(f"grid {list(grid)} does not fit the LM's layout {list(config.layout)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if labels is not None:
        if not config.num_classes:
            raise ValueError("this LM is unconditional; it takes no class")
        if len(labels) != num:
            raise ValueError(f"{len(labels)} labels for {num} samples")
    if guidance != 1.0 and (labels is None or not config.num_classes):
        raise ValueError("guidance needs a class-conditional LM and a class")


def _start_tokens(model: TokenLM, num: int, labels, guidance: float,
                  device: torch.device) -> Tensor:
    """(num,) start tokens, or (2 num,) conditional then null-class ones under guidance."""
    config = model.config
    if labels is None:
        return torch.full((num,), config.start_id(None), dtype=torch.int64, device=device)
    ids = torch.tensor([config.start_id(int(c)) for c in labels], device=device)
    if guidance == 1.0:
        return ids
    return torch.cat([ids, torch.full_like(ids, config.null_class_id)])


def _chunk(model: TokenLM, starts: Tensor, positions: Tensor, options: tuple[float, int, float],
           generator: torch.Generator | None, use_cache: bool) -> Tensor:
    """Sample one chunk of ``len(positions)`` codes per piece: (num, count) int64.

    Under guidance ``starts`` holds the conditional rows then the null-class rows, and
    both halves are fed the same sampled codes.
    """
    rows, count = starts.shape[0], positions.shape[0]
    tokens = starts[:, None]
    cache = KVCache() if use_cache else None
    for step in range(count):
        if cache is None:
            logits = model(tokens, positions[: step + 1])[:, -1]
        else:
            logits = model(tokens[:, -1:], positions[step : step + 1], cache)[:, -1]
        chosen = _choose(logits, model.config.codebook_size, options, generator)
        tokens = torch.cat([tokens, chosen.repeat(rows // chosen.shape[0])[:, None]], dim=1)
    return tokens[: rows // 2 if options[2] != 1.0 else rows, 1:]


def _choose(logits: Tensor, codebook_size: int, options: tuple[float, int, float],
            generator: torch.Generator | None) -> Tensor:
    """(rows, V) logits -> (num,) sampled codes, after guidance, temperature and top-k."""
    temperature, top_k, guidance = options
    logits = logits[:, :codebook_size].float()
    if guidance != 1.0:
        cond, uncond = logits.chunk(2)
        logits = uncond + guidance * (cond - uncond)
    logits = logits / temperature
    if 0 < top_k < codebook_size:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probabilities = torch.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator)[:, 0]
