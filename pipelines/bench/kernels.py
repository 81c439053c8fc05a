"""`vqtok bench kernels`: nearest-code search and the EMA update against plain PyTorch.

Every case is timed in one process beside two baselines: ``torch.cdist(x, c).argmin(1)``
and the unchunked ``(|c|^2 - 2 x c^T).argmin(1)``, and the matmul ``x @ c^T`` alone, whose
rate gives the floor 2NKD / rate that no exact search can beat by much.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from vqtok.kernels import available_backends, ema_update, nearest_code
from vqtok.pipelines.bench.memory import measure_peak
from vqtok.pipelines.config import JobConfig


@dataclass(frozen=True)
class KernelCase:
    n: int
    k: int
    d: int
    dtype: str = "fp32"


QUICK_CASES = [KernelCase(4096, 1024, 64)]
CPU_CASES = [KernelCase(16384, 1024, 64), KernelCase(65536, 8192, 64)]
GPU_CASES = [
    KernelCase(65536, 8192, 64),
    KernelCase(1_048_576, 16384, 64),
    KernelCase(1_048_576, 16384, 64, "bf16"),
    KernelCase(262_144, 4096, 256),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, int | None]:
    """Median wall time in ms over ``repeats`` runs after one warm-up, and the peak extra bytes."""
    with measure_peak(device) as peak:
        fn()
        _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak.extra_bytes


def _row(case: KernelCase, op: str, impl: str, ms: float, peak: int | None, flops: float) -> dict:
    return {
        **asdict(case), "op": op, "impl": impl, "median_ms": round(ms, 3),
        "tflops": round(flops / (ms * 1e-3) / 1e12, 3) if flops else None,
        "peak_extra_mib": None if peak is None else round(peak / 2**20, 1),
    }


def bench_nearest(case: KernelCase, device: torch.device, repeats: int) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[case.dtype]
    x = torch.randn(case.n, case.d, device=device, generator=g).to(dtype)
    c = torch.randn(case.k, case.d, device=device, generator=g).to(dtype)
    flops = 2.0 * case.n * case.k * case.d
    impls: dict[str, Callable[[], object]] = {
        "cdist_argmin": lambda: torch.cdist(x.float(), c.float()).argmin(1),
        "matmul_argmin": lambda: ((c.float() ** 2).sum(1) - 2 * x @ c.t()).argmin(1),
        "matmul_only": lambda: x @ c.t(),
    }
    backends = [b for b in available_backends() if b == "torch" or device.type == "cuda"]
    for backend in backends:
        impls[f"vqtok_{backend}"] = lambda b=backend: nearest_code(x, c, backend=b)
    rows = []
    for impl, fn in impls.items():
        if impl == "cdist_argmin" and case.n * case.k * 4 > 8 * 2**30:
            continue  # its N x K matrix would not fit
        ms, peak = time_call(fn, device, repeats)
        rows.append(_row(case, "nearest_code", impl, ms, peak, flops))
    base = {r["impl"]: r["median_ms"] for r in rows}
    for r in rows:
        r["vs_cdist"] = (
            round(base["cdist_argmin"] / r["median_ms"], 2) if "cdist_argmin" in base else None
        )
        r["vs_matmul_argmin"] = round(base["matmul_argmin"] / r["median_ms"], 2)
        r["vs_matmul_floor"] = round(r["median_ms"] / base["matmul_only"], 2)
    return rows


def bench_ema(case: KernelCase, device: torch.device, repeats: int) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(1)
    z = torch.randn(case.n, case.d, device=device, generator=g)
    indices = torch.randint(0, case.k, (case.n,), device=device, generator=g)
    size = torch.ones(case.k, device=device)
    m = torch.zeros(case.k, case.d, device=device)
    modes = [("torch", False)]
    if device.type == "cuda" and "triton" in available_backends():
        modes += [("triton", False), ("triton", True), ("torch", True)]
    rows = []
    for backend, det in modes:
        fn = lambda b=backend, dt=det: ema_update(  # noqa: E731
            size, m, z, indices, decay=0.99, backend=b, deterministic=dt
        )
        ms, peak = time_call(fn, device, repeats)
        rows.append(
            _row(case, "ema_update", f"vqtok_{backend}{'_det' if det else ''}", ms, peak, 0.0)
        )
    fallback = rows[0]["median_ms"]
    for r in rows:
        r["vs_torch_fallback"] = round(fallback / r["median_ms"], 2)
    return rows


@dataclass
class KernelsBenchConfig(JobConfig):
    """`vqtok bench kernels`: device ("auto": CUDA when present), one quick case or all,
    timed runs per case (the median is reported)."""

    device: str = "auto"
    quick: bool = False
    repeats: int = 5

    def problems(self) -> list[str]:
        return [] if self.repeats >= 1 else [f"repeats must be at least 1, got {self.repeats}"]


def bench_kernels(
    config: KernelsBenchConfig | None = None, cases: list[KernelCase] | None = None
) -> list[dict]:
    """Time both kernels on every case; one dict per (case, op, implementation)."""
    config = config or KernelsBenchConfig()
    device, repeats = config.device, config.repeats
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    if cases is None:
        cases = QUICK_CASES if config.quick else (GPU_CASES if dev.type == "cuda" else CPU_CASES)
    rows = []
    for case in cases:
        if dev.type == "cpu" and case.dtype != "fp32":
            continue
        rows += bench_nearest(case, dev, repeats)
        if case.dtype == "fp32":
            rows += bench_ema(case, dev, repeats)
    for r in rows:
        r["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return rows
