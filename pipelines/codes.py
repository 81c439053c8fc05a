"""The code-shard sample format: `<key>.npy` codes plus `<key>.json` metadata.

Codes have shape `(N, *latent)` or `(N, Q, *latent)` for N pieces (1 for an image, windows
for audio, clips for video) and Q residual levels, stored as uint16 when the codebook has
at most 65536 entries, else int32. The JSON records the model, the code layout and what is
needed to restore the media (original size, length, sample rate or fps, window layout).
"""

from __future__ import annotations

import io
import json

import numpy as np

CODE_FIELDS = ("npy", "json")
PASSTHROUGH_FIELDS = ("cls",)


def code_dtype(codebook_size: int) -> np.dtype:
    """The smallest stored dtype for codes below `codebook_size`."""
    return np.dtype(np.uint16) if codebook_size <= 65536 else np.dtype(np.int32)


def pack_codes(codes: np.ndarray, meta: dict) -> dict[str, bytes]:
    """codes: (N, [Q,] *latent) integer -> {"npy": ..., "json": ...} tar fields."""
    buffer = io.BytesIO()
    np.save(buffer, codes, allow_pickle=False)
    header = {**meta, "shape": list(codes.shape), "dtype": codes.dtype.name}
    return {"npy": buffer.getvalue(), "json": json.dumps(header, sort_keys=True).encode()}


def unpack_codes(fields: dict[str, bytes]) -> tuple[np.ndarray, dict]:
    """Inverse of `pack_codes`; raises KeyError/ValueError on a malformed sample."""
    missing = [ext for ext in CODE_FIELDS if ext not in fields]
    if missing:
        raise KeyError(f"code sample lacks {', '.join(missing)}")
    codes = np.load(io.BytesIO(fields["npy"]), allow_pickle=False)
    meta = json.loads(fields["json"])
    if list(codes.shape) != meta.get("shape"):
        raise ValueError(f"codes shape {list(codes.shape)} differs from header {meta.get('shape')}")
    return codes, meta
