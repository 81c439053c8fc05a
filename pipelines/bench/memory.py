"""Peak-memory measurement for benchmarks.

CUDA: the caching allocator's own peak counter. CPU: Linux's peak resident set size,
reset through /proc/self/clear_refs before the measured call, so the figure is the memory
the call added on top of what the process already held.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class PeakMemory:
    extra_bytes: int | None = None  # None where the platform cannot tell


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@functools.cache
def _return_freed_memory_to_the_os() -> None:
    """Make glibc serve every allocation above 128 KiB with mmap and unmap it on free.
    By default its threshold adapts upward, and freed buffers then stay in the heap,
    hiding later allocations from the resident-set figures."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_supported() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMemory]:
    """Measure the peak memory that the body adds; the result is filled in on exit."""
    peak = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.extra_bytes = torch.cuda.max_memory_allocated(device) - base
        return
    if not cpu_peak_supported():
        yield peak
        return
    _return_freed_memory_to_the_os()
    _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    base = _status_kib("VmRSS")
    yield peak
    peak.extra_bytes = max(0, _status_kib("VmHWM") - base) * 1024


def run_in_fresh_process(fn: Callable[..., object], *args: object) -> object:
    """``fn(*args)`` in a newly spawned process, so that memory another measurement freed
    (and allocators kept) cannot hide this one's. ``fn`` must be importable by name."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()
