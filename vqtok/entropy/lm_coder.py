"""Context-model entropy coding: ANS (constriction) driven by a TokenLM's next-code distributions.

The encoder and the decoder must build bit-identical integer frequency tables from the LM,
on machines that may differ in thread count, batch size and device (CPU or GPU). Float
logits are not bit-reproducible across those (the order of summation in a matrix product
depends on blocking and threads), so a table is made in three steps:

1. the LM runs in float64 (its float32 weights converted exactly): two machines then agree
   to about 1e-13, not 1e-6;
2. each logit is rounded to a multiple of 1/16 nat (``LOGIT_STEPS``) and the maximum is
   subtracted, in integers;
3. the frequency of a code is ``EXP_TABLE[d]`` = round(2**24 exp(-d/16)), a table made
   once with exact decimal arithmetic, at least 1 so every code stays codable.

Machines then disagree only when a float64 logit lands within ~1e-13 of a rounding
boundary (1/16 apart): a few 1e-12 per logit, some 1e-5 per image of 4096 codes of 1024.
This is not a proof of exactness, so a disagreement is caught, not silent: the .vqt header
stores a CRC of the codes, and decoding reports a mismatch. Rounding logits to 1/16 nat
costs under 1e-3 bits per code.

Codes are coded piece by piece in fixed chunks (``vqtok.lm.layout.chunk_starts``), and the
stream order is (chunk, position, piece) whatever ``batch_size`` is, which only splits the
LM's work, so any batch size decodes what any other encoded.
"""

from __future__ import annotations

import copy
import decimal
import math

import numpy as np
import torch
from torch import Tensor

from vqtok.lm.layout import chunk_starts, slot_positions
from vqtok.lm.model import KVCache, TokenLM

LM_CODER = "lm"
LOGIT_STEPS = 16  # logits are rounded to 1/16 nat
FREQUENCY_BITS = 24


def _exp_table() -> np.ndarray:
    """round(2**24 * exp(-d / 16)) for d = 0, 1, ... while >= 1, computed exactly."""
    context = decimal.Context(prec=40)
    scale, step = decimal.Decimal(2**FREQUENCY_BITS), decimal.Decimal(LOGIT_STEPS)
    values, d = [], 0
    while True:
        value = int((scale * context.exp(-decimal.Decimal(d) / step)).to_integral_value(
            rounding=decimal.ROUND_HALF_EVEN))
        if value < 1:
            break
        values.append(value)
        d += 1
    return np.array(values, dtype=np.int64)


EXP_TABLE = _exp_table()


def quantized_frequencies(logits: Tensor) -> np.ndarray:
    """Integer frequencies from float64 logits, the same on every machine that agrees on them.

    Args:
        logits: float64 (R, K) logits over the codes.

    Returns:
        int64 (R, K) frequencies in [1, 2**24]; the likeliest code gets 2**24.
    """
    steps = torch.floor(logits.double() * LOGIT_STEPS + 0.5).to(torch.int64).cpu().numpy()
    drop = np.minimum(steps.max(axis=1, keepdims=True) - steps, EXP_TABLE.size - 1)
    return np.maximum(EXP_TABLE[drop], 1)


def as_tokens(codes: np.ndarray, num_levels: int) -> np.ndarray:
    """Codes in the LM's token order: each position's residual levels together.

    Args:
        codes: integer (N, [Q,] *grid) codes.
        num_levels: Q (1 when the codes have no level axis).

    Returns:
        int64 (N, prod(grid) * Q) tokens.
    """
    if num_levels > 1:
        codes = np.moveaxis(codes, 1, -1)
    return codes.reshape(codes.shape[0], -1).astype(np.int64)


def codes_grid(shape: tuple[int, ...], num_levels: int) -> tuple[int, ...]:
    """The latent grid of codes.

    Args:
        shape: The codes' shape (N, [Q,] *grid).
        num_levels: Q (1 when the codes have no level axis).

    Returns:
        The grid's sizes.
    """
    return tuple(shape[2:] if num_levels > 1 else shape[1:])


def lm_tables(lm: TokenLM, codes: np.ndarray, batch_size: int = 16
              ) -> tuple[np.ndarray, np.ndarray]:
    """The codes in stream order and the integer table each is coded with.

    Args:
        lm: The LM of the tokenizer that made the codes.
        codes: integer (N, [Q,] *grid) codes in [0, K), Q the LM's levels.
        batch_size: Pieces per LM call (does not change the output).

    Returns:
        symbols int32 (M,) in (chunk, position, piece) order, and tables int64 (M, K).

    Raises:
        ValueError: The codes do not fit the LM (levels, axes, code range).
    """
    model, config = _float64(lm), lm.config
    grid = _check_codes(lm, codes.shape)
    tokens = torch.from_numpy(as_tokens(np.asarray(codes), config.num_levels))
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= config.codebook_size):
        raise ValueError(f"codes must lie in [0, {config.codebook_size})")
    symbols, tables = [], []
    for start, count in chunk_starts(tokens.shape[1], config.max_len, config.num_levels):
        positions = slot_positions(config.layout, grid, config.num_levels, start, count,
                                   relative_time=config.relative_time)
        frequencies = np.concatenate([
            _chunk_frequencies(model, rows[:, start : start + count - 1], positions)
            for rows in tokens.split(batch_size)
        ])  # (N, count, K)
        tables.append(frequencies.transpose(1, 0, 2).reshape(-1, config.codebook_size))
        symbols.append(tokens[:, start : start + count].T.reshape(-1).numpy())
    if not symbols:
        return np.zeros(0, np.int32), np.zeros((0, config.codebook_size), np.int64)
    return np.concatenate(symbols).astype(np.int32), np.concatenate(tables)


def encode_tables(symbols: np.ndarray, tables: np.ndarray) -> bytes:
    """ANS-code symbols, each with its own integer frequency table.

    Args:
        symbols: int32 (M,) codes in stream order.
        tables: int64 (M, K) frequencies, one row per symbol.

    Returns:
        The stream as little-endian 32-bit words.
    """
    coder = _stack().AnsCoder()
    if symbols.size:
        coder.encode_reverse(symbols, _family(), _probabilities(tables))
    return coder.get_compressed().astype("<u4").tobytes()


def table_bits(symbols: np.ndarray, tables: np.ndarray) -> float:
    """The ideal code length of symbols under their tables.

    Args:
        symbols: int32 (M,) codes.
        tables: int64 (M, K) frequencies, one row per symbol.

    Returns:
        The sum of -log2 p over the symbols, in bits.
    """
    if not symbols.size:
        return 0.0
    chosen = tables[np.arange(symbols.size), symbols]
    return float(-np.log2(chosen / tables.sum(axis=1)).sum())


def encode_lm(lm: TokenLM, codes: np.ndarray, batch_size: int = 16) -> bytes:
    """Entropy-code ``codes`` with the LM's next-code distributions.

    Args:
        lm: The LM of the tokenizer that made the codes.
        codes: integer (N, [Q,] *grid) codes in [0, K), Q the LM's levels.
        batch_size: Pieces per LM call (does not change the output).

    Returns:
        The ANS stream as little-endian 32-bit words; ``decode_lm`` needs the shape.

    Raises:
        ValueError: The codes do not fit the LM (levels, axes, code range).
    """
    return encode_tables(*lm_tables(lm, codes, batch_size))


def decode_lm(lm: TokenLM, payload: bytes, shape: tuple[int, ...],
              batch_size: int = 16) -> np.ndarray:
    """Inverse of ``encode_lm``.

    Args:
        lm: The LM the payload was coded with.
        payload: The bytes ``encode_lm`` returned.
        shape: The shape of the codes, (N, [Q,] *grid).
        batch_size: Pieces per LM call.

    Returns:
        int64 codes of ``shape``.

    Raises:
        ValueError: The shape does not fit the LM, announces more codes than the payload
            can hold, or the payload does not decode to exactly the announced codes.
    """
    if len(payload) % 4:
        raise ValueError(f"payload of {len(payload)} bytes is not a whole number of words")
    model, config = _float64(lm), lm.config
    grid = _check_codes(lm, shape)
    total = math.prod(grid) * config.num_levels
    if shape[0] * total > _max_codes(len(payload), config.codebook_size):
        raise ValueError(f"{len(payload)} payload bytes cannot hold codes of shape {list(shape)}")
    tokens = torch.zeros(shape[0], total, dtype=torch.int64)
    coder = _stack().AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    try:
        for start, count in chunk_starts(total, config.max_len, config.num_levels):
            positions = slot_positions(config.layout, grid, config.num_levels, start, count,
                                       relative_time=config.relative_time)
            _decode_chunk(model, coder, tokens, positions, start, batch_size)
    except Exception as error:  # constriction raises plain exceptions on malformed streams
        raise ValueError(f"payload does not decode: {error}") from None
    if not coder.is_empty():
        raise ValueError("payload holds more data than the announced codes")
    codes = tokens.numpy()
    if config.num_levels > 1:
        return np.moveaxis(codes.reshape(shape[0], *grid, config.num_levels), -1, 1).copy()
    return codes.reshape(shape)


def lm_bits(lm: TokenLM, codes: np.ndarray, batch_size: int = 16) -> float:
    """What an ideal coder spends on ``codes`` under the quantized LM tables, in bits.

    Args:
        lm: The LM.
        codes: integer (N, [Q,] *grid) codes.
        batch_size: Pieces per LM call.

    Returns:
        The sum of -log2 p(code | codes before it).
    """
    return table_bits(*lm_tables(lm, codes, batch_size))


def _max_codes(payload_bytes: int, codebook_size: int) -> float:
    """An upper bound on the codes a payload can hold, which guards decoding time.

    Every code costs at least -log2 of the largest probability the coder can give, at most
    1 - (K - 1) / 2**24 since each other code keeps one unit of its 24-bit mass; the coder's
    64-bit state is the only other content.
    """
    min_bits = -math.log2(1 - (codebook_size - 1) / 2**FREQUENCY_BITS)
    return (8 * payload_bytes + 64) / min_bits if min_bits > 0 else math.inf


def _probabilities(tables: np.ndarray) -> np.ndarray:
    """Rows of integer frequencies as float64 probabilities: exact sums, IEEE divisions."""
    return tables / tables.sum(axis=1, keepdims=True, dtype=np.float64)


def _decode_chunk(model: TokenLM, coder, tokens: Tensor, positions: Tensor, start: int,
                  batch_size: int) -> None:
    """Decode one chunk of every piece into ``tokens`` (N, total), position by position."""
    groups = [torch.arange(tokens.shape[0])[i : i + batch_size]
              for i in range(0, tokens.shape[0], batch_size)]
    caches = [KVCache() for _ in groups]
    first = model.config.start_id(None)
    for step in range(positions.shape[0]):
        tables = []
        for rows, cache in zip(groups, caches, strict=True):
            previous = (torch.full((rows.shape[0], 1), first) if step == 0
                        else tokens[rows, start + step - 1 : start + step])
            with torch.inference_mode():
                logits = model(previous, positions[step : step + 1], cache)[:, -1]
            tables.append(quantized_frequencies(logits[:, : model.config.codebook_size]))
        decoded = coder.decode(_family(), _probabilities(np.concatenate(tables)))
        tokens[:, start + step] = torch.from_numpy(np.asarray(decoded, dtype=np.int64))


@torch.inference_mode()
def _chunk_frequencies(model: TokenLM, codes: Tensor, positions: Tensor) -> np.ndarray:
    """Frequencies of every slot of a chunk: codes (B, count - 1) -> (B, count, K) int64."""
    first = torch.full((codes.shape[0], 1), model.config.start_id(None), dtype=torch.int64)
    logits = model(torch.cat([first, codes], dim=1), positions)
    b, length, _ = logits.shape
    k = model.config.codebook_size
    return quantized_frequencies(logits[..., :k].reshape(-1, k)).reshape(b, length, k)


def _float64(lm: TokenLM) -> TokenLM:
    """A float64 copy of the LM on the CPU-or-GPU device it is on, in eval mode."""
    return copy.deepcopy(lm).double().eval()


def _check_codes(lm: TokenLM, shape: tuple[int, ...]) -> tuple[int, ...]:
    config = lm.config
    grid = codes_grid(tuple(shape), config.num_levels)
    if (len(shape) < 2 or (config.num_levels > 1 and shape[1] != config.num_levels)
            or len(grid) != len(config.layout)):
        raise ValueError(f"codes of shape {list(shape)} do not fit an LM of {config.num_levels} "
                         f"level(s) over a {len(config.layout)}-axis grid")
    return grid


def _family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def _stack():
    import constriction

    return constriction.stream.stack
