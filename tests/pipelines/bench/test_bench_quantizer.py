"""The quantizer benchmark runs end to end on a tiny case and reports honest rows."""

from __future__ import annotations

import pytest

from vqtok.pipelines.bench.memory import cpu_peak_supported
from vqtok.pipelines.bench.quantizer import REFERENCE, QuantizerBenchConfig, bench_quantizer


@pytest.mark.slow
def test_bench_quantizer_reports_time_and_memory_for_each_implementation():
    rows = bench_quantizer(QuantizerBenchConfig(n=2048, k=256, d=16, steps=1, compare=True))
    ours, reference = rows
    assert ours["impl"] == "vqtok" and ours["step_s"] > 0
    assert (ours["peak_extra_mib"] is not None) == cpu_peak_supported()
    assert reference["impl"] == REFERENCE
    if "missing" not in reference:
        assert reference["step_s"] > 0
        assert ours["speedup"] == pytest.approx(reference["step_s"] / ours["step_s"], rel=0.01)
