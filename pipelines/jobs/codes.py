"""The code-shard sample format: `<key>.npy` or `<key>.vqc` codes plus `<key>.json` metadata.

Codes have shape `(N, *latent)` or `(N, Q, *latent)` for N pieces and Q residual levels:
one piece by default, the codes of the whole image, audio file or video. With windows or
clips (`encode --window-seconds`, `--clip-frames`) the pieces are fixed-length slices of
the whole file's codes along time, recorded as `cut` in the JSON (see `cut_codes`).
Codes are stored as uint16 when the codebook has at most 65536 entries, else int32. The
JSON records the model, the code layout and what is needed to restore the media (original
size, length, sample rate or fps).

A compressed sample (`vqtok encode --compress`) holds instead of the `.npy` a `.vqc`: the
codes entropy-coded with the model's prior (the `.vqt` payload, see docs/vqt-format.md).
Its JSON adds `coder` and `prior_id`; decoding it needs the same prior, so a reader passes
the checkpoint's prior and a different one is refused.
"""

from __future__ import annotations

import io
import json

import numpy as np

from vqtok.entropy import CODER, PRIOR_TOTAL, decode_payload, encode_payload, prior_id
from vqtok.pipelines.data.media import EXTENSIONS
from vqtok.pipelines.errors import UsageError

PLAIN_FIELD = "npy"
COMPRESSED_FIELD = "vqc"
STORED_DTYPES = ("uint16", "int32")


def code_dtype(codebook_size: int) -> np.dtype:
    """The smallest stored dtype for codes below `codebook_size`."""
    return np.dtype(STORED_DTYPES[0] if codebook_size <= 65536 else STORED_DTYPES[1])


def pack_codes(codes: np.ndarray, meta: dict, prior: np.ndarray | None = None) -> dict[str, bytes]:
    """codes: (N, [Q,] *latent) integer -> {"npy" or "vqc": ..., "json": ...} tar fields.

    With `prior` ((Q, K) int64, see `vqtok.entropy`), the codes are entropy-coded into "vqc".
    """
    header = {**meta, "shape": list(codes.shape), "dtype": codes.dtype.name}
    if prior is None:
        buffer = io.BytesIO()
        np.save(buffer, codes, allow_pickle=False)
        return {PLAIN_FIELD: buffer.getvalue(), "json": _json(header)}
    header |= {"coder": {"name": CODER, "prior_total": PRIOR_TOTAL}, "prior_id": prior_id(prior)}
    return {COMPRESSED_FIELD: encode_payload(codes, prior), "json": _json(header)}


def cut_codes(
    codes: np.ndarray, length: int, stride: int, time_axis: int
) -> tuple[np.ndarray, dict]:
    """Cut one code stream into fixed-length pieces along time.

    Pieces start every ``stride`` positions until one reaches the end; the last is padded by
    repeating the last position, so that every piece has ``length`` positions.

    Args:
        codes: (1, [Q,] T, *rest) integer, one sample's whole-signal codes.
        length: Positions per piece (>= 1).
        stride: Positions between piece starts (1 <= stride <= length).
        time_axis: The axis of T (1, or 2 with a level axis).

    Returns:
        (pieces (N, [Q,] length, *rest), cut) where ``cut`` = {"length", "stride", "total"}
        is what ``join_codes`` needs to give back the stream.
    """
    total = codes.shape[time_axis]
    count = 1 + max(0, -(-(total - length) // stride))
    index = np.minimum(
        np.arange(count)[:, None] * stride + np.arange(length)[None, :], total - 1
    )  # (N, length): past the end, the last position again
    pieces = np.take(codes[0], index, axis=time_axis - 1)  # (..., N, length, ...)
    pieces = np.moveaxis(pieces, time_axis - 1, 0)
    return np.ascontiguousarray(pieces), {"length": length, "stride": stride, "total": total}


def join_codes(pieces: np.ndarray, cut: object, time_axis: int) -> np.ndarray:
    """Inverse of ``cut_codes``: (N, [Q,] length, *rest) -> (1, [Q,] total, *rest).

    ``cut`` comes from a file, so it is checked against the pieces: ValueError when it does
    not describe them (a gap or a count that differs would decode something else).
    """
    if not isinstance(cut, dict) or not all(
        isinstance(cut.get(k), int) and not isinstance(cut.get(k), bool) and cut[k] >= 1
        for k in ("length", "stride", "total")
    ):
        raise ValueError(f"cut {cut!r} must give positive integers length, stride and total")
    length, stride, total = cut["length"], cut["stride"], cut["total"]
    count = 1 + max(0, -(-(total - length) // stride))
    if pieces.ndim <= time_axis or pieces.shape[0] != count or pieces.shape[time_axis] != length:
        raise ValueError(
            f"cut {cut} describes {count} pieces of {length} positions; the codes are "
            f"{list(pieces.shape)}"
        )
    if stride > length:
        raise ValueError(f"cut {cut}: a stride above the length leaves gaps")
    out = np.empty((1, *pieces.shape[1:time_axis], total, *pieces.shape[time_axis + 1 :]),
                   pieces.dtype)
    for i, piece in enumerate(pieces):
        start = i * stride
        stop = min(start + length, total)
        index = (slice(None),) * (time_axis - 1) + (slice(start, stop),)
        out[0][index] = np.take(piece, np.arange(stop - start), axis=time_axis - 1)
    return out


def time_axis(meta: dict) -> int:
    """The axis of time in a sample's codes: 1, or 2 after the level axis of residual VQ."""
    return 2 if meta.get("layout") == "pieces,levels,latent" else 1


def _json(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


_MEDIA_EXTENSIONS = {ext for exts in EXTENSIONS.values() for ext in exts}


def is_compressed(fields: dict[str, bytes]) -> bool:
    """Whether a code sample holds entropy-coded codes (and so needs the model's prior)."""
    return COMPRESSED_FIELD in fields


def code_meta(fields: dict[str, bytes]) -> dict:
    """The sample's JSON metadata; raises KeyError/ValueError when it is missing or malformed."""
    if "json" not in fields:
        media = sorted(ext for ext in fields if ext.lower() in _MEDIA_EXTENSIONS)
        if media:
            raise KeyError(
                f"this is a media sample ({', '.join(media)}), not codes: decode and "
                "export-tokens read the code shards that `vqtok encode` writes"
            )
        raise KeyError(f"code sample lacks json (fields: {', '.join(sorted(fields)) or 'none'})")
    meta = json.loads(fields["json"])
    if not isinstance(meta, dict):
        raise ValueError("code sample json is not an object")
    return meta


def unpack_codes(
    fields: dict[str, bytes], prior: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """Inverse of `pack_codes` -> (codes in their stored dtype, meta).

    A compressed sample needs `prior`: a UsageError when it is None or is not the prior the
    codes were coded with. Raises KeyError/ValueError on a malformed sample.
    """
    meta = code_meta(fields)
    if is_compressed(fields):
        codes = _decompress(fields[COMPRESSED_FIELD], meta, prior)
    elif PLAIN_FIELD in fields:
        codes = np.load(io.BytesIO(fields[PLAIN_FIELD]), allow_pickle=False)
    else:
        raise KeyError(f"code sample lacks {PLAIN_FIELD} or {COMPRESSED_FIELD}")
    if list(codes.shape) != meta.get("shape"):
        raise ValueError(f"codes shape {list(codes.shape)} differs from header {meta.get('shape')}")
    _check_code_values(codes, meta.get("codebook_size"))
    return codes, meta


def _check_code_values(codes: np.ndarray, codebook_size: object) -> None:
    """Codes are integers in [0, K): a float would be truncated and a code >= K would read
    another row or collide with the special token ids."""
    if codes.dtype.name not in STORED_DTYPES:
        raise ValueError(
            f"codes are {codes.dtype.name}; code files hold {' or '.join(STORED_DTYPES)}"
        )
    if not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"bad codebook_size {codebook_size!r} in the header")
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(
            f"codes must lie in [0, {codebook_size}); found {int(codes.min())}..{int(codes.max())}"
        )


def _decompress(payload: bytes, meta: dict, prior: np.ndarray | None) -> np.ndarray:
    if prior is None:
        raise UsageError(f"codes of {meta.get('key')!r} are entropy-coded; reading them needs the "
                         "checkpoint they were encoded with")
    coder = meta.get("coder")
    coder = coder.get("name") if isinstance(coder, dict) else coder
    if coder != CODER:
        raise ValueError(f"codes are coded with {coder!r}; this vqtok reads {CODER!r} only")
    if meta.get("prior_id") != prior_id(prior):
        raise UsageError(
            f"codes of {meta.get('key')!r} were entropy-coded with prior {meta.get('prior_id')}, "
            f"but this checkpoint holds prior {prior_id(prior)}; use the checkpoint "
            "they were encoded with"
        )
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"bad codes shape {shape} in the header")
    if meta.get("dtype") not in STORED_DTYPES:
        raise ValueError(f"bad codes dtype {meta.get('dtype')!r} in the header")
    return decode_payload(payload, prior, tuple(shape)).astype(meta["dtype"])
