"""The rotation trick: a gradient estimator for VQ that replaces the straight-through copy.

Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick".

The quantizer's output is written as q~ = sg[lambda R] z, where R is the rotation that turns
z / ||z|| onto e / ||e|| in the plane of the two, and lambda = ||e|| / ||z||; so the forward
value is the code vector e while the gradient reaching z is lambda R^T g instead of g. With
r = (z^ + e^) / ||z^ + e^|| (unit vectors z^, e^), R = I - 2 r r^T + 2 e^ z^T, which the code
applies as vector operations: no (D, D) matrix per row is ever built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NORM_EPS = 1e-12  # a zero latent or code has no direction; the map then degrades gracefully


def rotate_through(z: Tensor, e: Tensor) -> Tensor:
    """Forward value ``e``; the gradient at the output reaches ``z`` rotated and rescaled.

    Args:
        z: (N, C) fp32 latents, with gradient.
        e: (N, C) fp32 code vectors chosen for the rows of ``z`` (their gradient is not used:
            codes learn from the codebook loss or EMA, as with the straight-through copy).

    Returns:
        (N, C) fp32 whose value equals the straight-through output's bit for bit (``e`` up to
        rounding) and whose gradient with respect to ``z`` is ``lambda R^T g`` for the
        upstream gradient ``g``.
    """
    with torch.no_grad():
        z_unit = F.normalize(z, dim=-1, eps=NORM_EPS)
        e_unit = F.normalize(e, dim=-1, eps=NORM_EPS)
        # When e^ = -z^ the sum vanishes, r becomes 0 and R = I + 2 e^ z^T = I - 2 z^ z^T,
        # the reflection that still maps z^ onto e^.
        r = F.normalize(z_unit + e_unit, dim=-1, eps=NORM_EPS)
        scale = e.norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    along_r = (z * r).sum(-1, keepdim=True)
    along_z = (z * z_unit).sum(-1, keepdim=True)
    rotated = scale * (z - 2 * r * along_r + 2 * e_unit * along_z)
    # Add the rotated term's gradient path to the straight-through copy's value, rather than
    # return the rotated vector, whose rounding differs in the last bits: switching the
    # estimator then changes gradients only, never a forward value or a code.
    return (z + (e - z)).detach() + (rotated - rotated.detach())
