"""`vqtok bench quantizer`: one VQ training step, vqtok against vector-quantize-pytorch.

A step is what training does to the quantizer: nearest code, EMA codebook update, losses,
usage accounting and dead-code restart, and the backward pass through the straight-through
estimator. Both implementations get the same (1, N, D) standard-normal latents, a codebook
of K codes and EMA decay 0.99, and k-means init off (the reference's default).

Each implementation runs in a fresh spawned process, so that neither one's imports nor its
freed-but-cached memory count against the other. Time: the median wall time of ``steps``
steps after one untimed warm-up step. Memory: the peak resident set size over the warm-up
and timed steps minus the resident set size just before them (Linux VmHWM, reset through
/proc/self/clear_refs; see ``vqtok.pipelines.bench.memory``), i.e. the memory a step adds on top
of the model and its input.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vqtok.pipelines.bench.memory import run_in_fresh_process
from vqtok.pipelines.config import JobConfig

REFERENCE = "vector-quantize-pytorch"


def _vqtok_step(n: int, k: int, d: int) -> Callable[[], None]:
    import vqtok.quantizers  # noqa: F401  (registers "vq")
    from vqtok.registry import QUANTIZERS

    quantizer = QUANTIZERS.create("vq", dim=d, codebook_size=k, decay=0.99, kmeans_init=False)
    z = torch.randn(1, n, d).transpose(1, 2).requires_grad_()  # (B, D, N), as a conv encoder gives

    def step() -> None:
        out = quantizer(z)
        (out.z_q.square().mean() + sum(out.losses.values())).backward()

    return step


def _reference_step(n: int, k: int, d: int) -> Callable[[], None]:
    from vector_quantize_pytorch import VectorQuantize

    quantizer = VectorQuantize(dim=d, codebook_size=k, decay=0.99)
    z = torch.randn(1, n, d).requires_grad_()

    def step() -> None:
        quantized, _, commit_loss = quantizer(z)
        (quantized.square().mean() + commit_loss.sum()).backward()

    return step


def _measure(impl: str, n: int, k: int, d: int, steps: int) -> dict:
    """Runs in the child process: warm-up plus ``steps`` timed steps under the peak-memory probe."""
    from vqtok.pipelines.bench.memory import measure_peak

    torch.manual_seed(0)
    step = _vqtok_step(n, k, d) if impl == "vqtok" else _reference_step(n, k, d)
    times = []
    with measure_peak(torch.device("cpu")) as peak:
        step()
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {
        "step_s": round(statistics.median(times), 3),
        "peak_extra_mib": None if peak.extra_bytes is None else round(peak.extra_bytes / 2**20, 1),
    }


def _reference_version() -> str | None:
    try:
        from importlib.metadata import version

        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        return None
    return version(REFERENCE)


@dataclass
class QuantizerBenchConfig(JobConfig):
    """`vqtok bench quantizer`: N encoder vectors per step, K codes of dimension D, timed
    steps, and whether to time vector_quantize_pytorch beside vqtok when it is installed."""

    n: int = 65536
    k: int = 8192
    d: int = 64
    steps: int = 3
    compare: bool = True

    def problems(self) -> list[str]:
        return [f"{name} must be at least 1, got {getattr(self, name)}"
                for name in ("n", "k", "d", "steps") if getattr(self, name) < 1]


def bench_quantizer(config: QuantizerBenchConfig | None = None) -> list[dict]:
    """Time a VQ training step on CPU for N latents, K codes of dimension D.

    Returns one row per implementation: impl, n, k, d, steps, threads, step_s (median
    seconds), peak_extra_mib; the vqtok row also gets speedup and memory_ratio against the
    reference when it ran. A reference that is not installed gives a row with ``missing``.
    """
    config = config or QuantizerBenchConfig()
    n, k, d, steps = config.n, config.k, config.d, config.steps
    case = {"n": n, "k": k, "d": d, "steps": steps, "threads": torch.get_num_threads()}
    rows = [{"impl": "vqtok", **case, **run_in_fresh_process(_measure, "vqtok", n, k, d, steps)}]
    if not config.compare:
        return rows
    version = _reference_version()
    if version is None:
        rows.append({"impl": REFERENCE, **case, "missing": f"{REFERENCE} is not installed"})
        return rows
    reference = {
        "impl": REFERENCE,
        "version": version,
        **case,
        **run_in_fresh_process(_measure, "reference", n, k, d, steps),
    }
    rows.append(reference)
    ours = rows[0]
    ours["speedup"] = round(reference["step_s"] / ours["step_s"], 2)
    if ours["peak_extra_mib"] and reference["peak_extra_mib"] is not None:
        ours["memory_ratio"] = round(reference["peak_extra_mib"] / ours["peak_extra_mib"], 1)
    return rows


if __name__ == "__main__":
    import json

    for row in bench_quantizer():
        print(json.dumps(row))
