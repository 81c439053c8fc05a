"""GPU check for the Triton kernels: correctness against float64, then timings.

Run on a CUDA machine, in one go (about 2-4 minutes on an H200):
    bash benchmarks/gpu_check.sh            # installs the repo without deps, then runs this
Writes gpu_check.json (every check and timing row) to --out and prints a summary; exits 1
when a correctness check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vqtok.kernels import ema_update, nearest_code
from vqtok.pipelines.bench.kernels import KernelsBenchConfig, bench_kernels

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def poison_allocator(device: torch.device) -> None:
    """Fill the memory the caching allocator will hand out next with NaN bytes, so that an
    output element the kernel forgets to write shows up as garbage instead of zero."""
    free, _ = torch.cuda.mem_get_info(device)
    block = torch.empty(min(free // 4, 8 * 2**30) // 4, dtype=torch.float32, device=device)
    block.fill_(float("nan"))
    del block


def float64_nearest(
    x: torch.Tensor, c: torch.Tensor, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best and second-best float64 distances and the best index, in row chunks."""
    x64, c64 = x.double(), c.double()
    if metric == "cosine":
        x64 = torch.nn.functional.normalize(x64, dim=1)
        c64 = torch.nn.functional.normalize(c64, dim=1)
    best_i = [torch.empty(0, dtype=torch.int64, device=x.device)]
    top2 = [torch.empty(0, 2, dtype=torch.float64, device=x.device)]
    for s in range(0, x.shape[0], 4096):
        d = torch.cdist(x64[s : s + 4096], c64).pow(2)
        if metric == "cosine":
            d = d * 0.5
        t = d.topk(min(2, c.shape[0]), dim=1, largest=False)
        best_i.append(t.indices[:, 0])
        top2.append(t.values if c.shape[0] > 1 else t.values.repeat(1, 2))
    return torch.cat(best_i), torch.cat(top2)


def check_nearest(
    n: int,
    k: int,
    d: int,
    dtype: str,
    metric: str,
    device,
    offset: float = 0.0,
    strided: bool = False,
) -> dict:
    g = torch.Generator(device=device).manual_seed(n * 31 + k * 7 + d)
    x = (torch.randn(n, d, device=device, generator=g) + offset).to(DTYPES[dtype])
    c = (torch.randn(k, d, device=device, generator=g) + offset).to(DTYPES[dtype])
    if strided:
        x = x.t().contiguous().t()
    poison_allocator(device)
    idx, dist = nearest_code(x, c, metric=metric, backend="triton")
    torch.cuda.synchronize()
    ref_i, top2 = float64_nearest(x, c, metric)
    gap = (top2[:, 1] - top2[:, 0]) / top2[:, 1].abs().clamp_min(1e-30)
    clear = gap > 1e-5
    mismatched = int((idx[clear] != ref_i[clear]).sum())
    chosen = (
        torch.cdist(x.double()[:, None, :], c.double()[idx][:, None, :]).flatten().pow(2)
        if metric == "l2"
        else None
    )
    ok = (
        mismatched == 0
        and bool(torch.isfinite(dist).all())
        and bool((dist >= 0).all())
        and bool((idx >= 0).all() & (idx < k).all())
    )
    if chosen is not None and n:
        ok = ok and bool(
            torch.allclose(dist.double(), chosen, rtol=1e-3, atol=1e-3 * (1 + offset**2 * 1e-6))
        )
    return {
        "check": "nearest_code",
        "n": n,
        "k": k,
        "d": d,
        "dtype": dtype,
        "metric": metric,
        "offset": offset,
        "strided": strided,
        "mismatched_clear_rows": mismatched,
        "near_tie_rows": int((~clear).sum()),
        "ok": ok,
    }


def check_ties(device) -> dict:
    g = torch.Generator(device=device).manual_seed(5)
    base = torch.randn(300, 32, device=device, generator=g)
    c = torch.cat([base, base, base[:100]])  # duplicates across many tiles
    x = base + 0.01 * torch.randn(300, 32, device=device, generator=g)
    idx, _ = nearest_code(x, c, backend="triton")
    return {
        "check": "ties_lowest_index",
        "ok": bool((idx == torch.arange(300, device=device)).all()),
    }


def check_ema(n: int, k: int, d: int, deterministic: bool, device) -> dict:
    g = torch.Generator(device=device).manual_seed(n + k + d)
    z = torch.randn(n, d, device=device, generator=g)
    idx = (torch.rand(n, device=device, generator=g).pow(2) * k).long().clamp_max(k - 1)
    size0, m0 = (
        torch.rand(k, device=device, generator=g),
        torch.randn(k, d, device=device, generator=g),
    )
    poison_allocator(device)
    size, m = size0.clone(), m0.clone()
    e = ema_update(size, m, z, idx, decay=0.99, deterministic=deterministic, backend="triton")
    counts = torch.bincount(idx, minlength=k).double()
    sums = torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, idx, z.double())
    size64 = 0.99 * size0.double() + 0.01 * counts
    m64 = 0.99 * m0.double() + 0.01 * sums
    total = size64.sum()
    e64 = m64 / ((size64 + 1e-5) / (total + k * 1e-5) * total)[:, None]
    ok = all(
        torch.allclose(a.double(), b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
        for a, b in ((size, size64), (m, m64), (e, e64))
    )
    if deterministic:
        again = ema_update(
            size0.clone(), m0.clone(), z, idx, decay=0.99, deterministic=True, backend="triton"
        )
        ok = ok and torch.equal(again, e)
    return {
        "check": "ema_update",
        "n": n,
        "k": k,
        "d": d,
        "deterministic": deterministic,
        "ok": bool(ok),
    }


def correctness(device) -> list[dict]:
    results = []
    for n, k, d in [
        (0, 5, 8),
        (1, 1, 1),
        (1000, 1, 3),
        (4097, 513, 1),
        (5000, 1000, 64),
        (3000, 700, 1024),
        (20000, 4096, 256),
    ]:
        for dtype in ("fp32", "fp16", "bf16"):
            for metric in ("l2", "cosine"):
                results.append(check_nearest(n, k, d, dtype, metric, device))
    results.append(check_nearest(20000, 1024, 16, "fp32", "l2", device, offset=1e4))
    results.append(check_nearest(20000, 1024, 48, "fp32", "l2", device, strided=True))
    results.append(check_ties(device))
    for n, k, d in [(0, 4, 3), (100000, 1024, 64), (50000, 16384, 130), (7, 3, 1)]:
        for det in (False, True):
            results.append(check_ema(n, k, d, det, device))
    return results


def goals(rows: list[dict]) -> list[str]:
    lines = []
    big = [
        r
        for r in rows
        if r["n"] == 1_048_576 and r["k"] == 16384 and r["d"] == 64 and r["dtype"] == "fp32"
    ]
    near = {r["impl"]: r for r in big if r["op"] == "nearest_code"}
    if "vqtok_triton" in near:
        t = near["vqtok_triton"]
        lines.append(
            f"nearest_code: {t['vs_matmul_argmin']}x faster than unchunked matmul (goal >= 3x); "
            f"{t['vs_matmul_floor']}x the matmul floor (goal <= 2x)"
        )
    ema = {r["impl"]: r for r in big if r["op"] == "ema_update"}
    if "vqtok_triton" in ema:
        lines.append(
            f"ema_update: {ema['vqtok_triton']['vs_torch_fallback']}x faster than the "
            "index_add_ fallback (goal >= 2x)"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    start = time.time()
    checks = correctness(device)
    failed = [c for c in checks if not c["ok"]]
    print(
        f"correctness: {len(checks) - len(failed)}/{len(checks)} passed "
        f"in {time.time() - start:.0f}s"
    )
    for c in failed:
        print("FAILED", c)
    rows = [] if args.skip_timing else bench_kernels(KernelsBenchConfig(device="cuda", repeats=10))
    for r in rows:
        print(
            {
                k: r[k]
                for k in (
                    "n",
                    "k",
                    "d",
                    "dtype",
                    "op",
                    "impl",
                    "median_ms",
                    "tflops",
                    "peak_extra_mib",
                )
            }
        )
    summary = goals(rows)
    print("\n".join(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "checks": checks,
        "timings": rows,
        "goals": summary,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
