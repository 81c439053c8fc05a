"""Entropy coding of codes: the prior, ANS coding (constriction) and the .vqt container.

The prior is a code-frequency table.

    counts = fit_prior(model, fold_batches, folds=5)    # (F, Q, K) int64 code counts per fold
    prior, weights = smoothed_prior(counts)             # (Q, K) int64, rows sum to PRIOR_TOTAL
    payload = encode_payload(codes, prior, ADAPTIVE_CODER)  # bytes; needs `constriction`
    codes = decode_payload(payload, prior, codes.shape, ADAPTIVE_CODER)
    data = pack(header, payload); container = unpack(data)

`constriction` is imported on first use only, so `import vqtok` works without it.
"""

from vqtok.entropy.coder import (
    ADAPTIVE_CODER,
    CODER,
    CODERS,
    PayloadError,
    decode_payload,
    empirical_entropy_bits,
    encode_payload,
    entropy,
    ideal_bits,
)
from vqtok.entropy.container import (
    FORMAT_VERSION,
    Container,
    ContainerError,
    UnsupportedVersionError,
    pack,
    unpack,
)
from vqtok.entropy.prior import (
    PRIOR_TOTAL,
    check_prior,
    code_counts,
    fit_prior,
    model_prior,
    prior_id,
    quantize_counts,
    smoothed_prior,
    uniform_prior,
)

__all__ = [
    "ADAPTIVE_CODER",
    "CODER",
    "CODERS",
    "FORMAT_VERSION",
    "PRIOR_TOTAL",
    "Container",
    "ContainerError",
    "PayloadError",
    "UnsupportedVersionError",
    "check_prior",
    "code_counts",
    "decode_payload",
    "empirical_entropy_bits",
    "encode_payload",
    "entropy",
    "fit_prior",
    "model_prior",
    "ideal_bits",
    "pack",
    "prior_id",
    "quantize_counts",
    "smoothed_prior",
    "uniform_prior",
    "unpack",
]
