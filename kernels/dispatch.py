"""Backend choice and argument checks shared by both implementations."""

from __future__ import annotations

import functools
import os

import torch

from vqtok.kernels import reference

BACKENDS = ("auto", "torch", "triton")
METRICS = ("l2", "cosine")


@functools.cache
def triton_available() -> bool:
    """Whether the Triton backend can run here. Cached after the first call.

    Returns:
        True when Triton imports and can run: on a CUDA device, or under TRITON_INTERPRET=1.
    """
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or _interpreting()


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> list[str]:
    """The backends that can run here.

    Returns:
        ["torch", "triton"] when ``triton_available()``, else ["torch"].
    """
    return ["torch", "triton"] if triton_available() else ["torch"]


def choose_backend(device: torch.device, backend: str = "auto") -> str:
    """Resolve ``backend`` for tensors on ``device``.

    ``VQTOK_KERNEL_BACKEND=torch|triton`` in the environment overrides ``backend``.

    Args:
        device: Where the tensors are.
        backend: "auto" (Triton for CUDA tensors when it runs, else torch), "torch" or
            "triton".

    Returns:
        "torch" or "triton".

    Raises:
        ValueError: ``backend`` or ``VQTOK_KERNEL_BACKEND`` is not a known backend.
        RuntimeError: Triton was asked for where it cannot run (no Triton, or CPU tensors
            outside TRITON_INTERPRET=1).
    """
    forced = os.environ.get("VQTOK_KERNEL_BACKEND", "").strip().lower()
    if forced:
        if forced not in ("torch", "triton"):
            raise ValueError(f"VQTOK_KERNEL_BACKEND must be 'torch' or 'triton', got {forced!r}")
        backend = forced
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                "backend='triton' needs Triton and a CUDA device (or TRITON_INTERPRET=1)"
            )
        if device.type != "cuda" and not _interpreting():
            raise RuntimeError(
                "backend='triton' runs on CUDA tensors (CPU only under TRITON_INTERPRET=1)"
            )
    return backend


def _check_nearest_args(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> None:
    if x.dim() != 2 or codebook.dim() != 2:
        raise ValueError(
            f"x must be (N, D) and codebook (K, D); "
            f"got {tuple(x.shape)} and {tuple(codebook.shape)}"
        )
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"x has D={x.shape[1]} but the codebook has D={codebook.shape[1]}")
    if codebook.shape[0] < 1:
        raise ValueError("the codebook needs at least one row")
    if not (x.is_floating_point() and codebook.is_floating_point()):
        raise TypeError("x and codebook must be floating point")
    if x.device != codebook.device:
        raise ValueError(f"x is on {x.device} but the codebook is on {codebook.device}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    metric: str = "l2",
    backend: str = "auto",
    memory_budget: int = reference.DEFAULT_MEMORY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and distance of the nearest codebook row for every row of ``x``.

    Ties go to the lowest index, as ``torch.argmin``. No gradient flows through the result.

    Args:
        x: (N, D) float (fp32, fp16 or bf16; any strides).
        codebook: (K, D) float, K >= 1, on ``x``'s device.
        metric: "l2" or "cosine".
        backend: "auto", "torch" or "triton" (see ``choose_backend``).
        memory_budget: Bound on the torch backend's scratch memory, in bytes.

    Returns:
        indices (N,) int64 and distances (N,) float32: squared L2, or 1 - cos for
        ``metric="cosine"``, clamped at 0.

    Raises:
        ValueError: The shapes or devices do not match, the codebook is empty, or the
            metric or backend is unknown.
        TypeError: ``x`` or ``codebook`` is not floating point.
        RuntimeError: Triton was asked for where it cannot run.
    """
    _check_nearest_args(x, codebook, metric)
    with torch.no_grad():
        if x.shape[0] == 0:
            return (
                torch.empty(0, dtype=torch.int64, device=x.device),
                torch.empty(0, dtype=torch.float32, device=x.device),
            )
        if choose_backend(x.device, backend) == "triton":
            from vqtok.kernels import triton_nearest

            return triton_nearest.nearest_code_triton(x, codebook, metric)
        return reference.nearest_code_torch(x, codebook, metric, memory_budget)


def ema_update(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    z: torch.Tensor,
    indices: torch.Tensor,
    *,
    decay: float,
    eps: float = 1e-5,
    deterministic: bool = False,
    backend: str = "auto",
    check_indices: bool = True,
) -> torch.Tensor:
    """One EMA codebook step (van den Oord et al. 2017), in place.

    Applies N <- g N + (1-g) n and m <- g m + (1-g) sum z with g = ``decay``, where n and
    sum z are the counts and sums of the rows of ``z`` assigned to each code.

    Args:
        cluster_size: N, (K,) fp32, updated in place.
        embed_sum: m, (K, D) fp32, updated in place.
        z: (N, D) float.
        indices: (N,) int64 in [0, K), the code of each row of ``z``.
        decay: g, in [0, 1).
        eps: The Laplace smoothing of the cluster sizes.
        deterministic: Make the sums bit-reproducible on CUDA (sorted segment reduction
            instead of atomics).
        backend: "auto", "torch" or "triton" (see ``choose_backend``).
        check_indices: False skips the range check, which on a GPU waits for the device
            (min/max read back to the host) on every call: for indices straight from
            ``nearest_code``, which are in range by construction. Out-of-range indices are
            undefined behaviour then.

    Returns:
        The Laplace-smoothed codebook e = m / N~ as (K, D) fp32.

    Raises:
        ValueError: The shapes do not fit, ``decay`` lies outside [0, 1), an index lies
            outside [0, K), or the backend is unknown.
        TypeError: ``cluster_size`` or ``embed_sum`` is not float32.
        RuntimeError: Triton was asked for where it cannot run.
    """
    k, d = embed_sum.shape
    if (
        cluster_size.shape != (k,)
        or z.dim() != 2
        or z.shape[1] != d
        or indices.shape != (z.shape[0],)
    ):
        raise ValueError(
            f"shapes must be cluster_size (K,), embed_sum (K, D), z (N, D), indices (N,); got "
            f"{tuple(cluster_size.shape)}, {tuple(embed_sum.shape)}, {tuple(z.shape)}, "
            f"{tuple(indices.shape)}"
        )
    if cluster_size.dtype != torch.float32 or embed_sum.dtype != torch.float32:
        raise TypeError("cluster_size and embed_sum must be float32 buffers")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    with torch.no_grad():
        indices = indices.to(torch.int64)
        if (
            check_indices
            and indices.numel()
            and (int(indices.min()) < 0 or int(indices.max()) >= k)
        ):
            raise ValueError(f"indices must lie in [0, {k})")
        if choose_backend(z.device, backend) == "triton":
            from vqtok.kernels import triton_ema

            return triton_ema.ema_update_triton(
                cluster_size, embed_sum, z, indices, decay, eps, deterministic
            )
        return reference.ema_update_torch(
            cluster_size, embed_sum, z, indices, decay, eps, deterministic
        )
