"""RELIABILITY.md: every declared hardening case is in it, as declared (see
tests/reliability.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.reliability import CASES, Case, render

REPORT = Path(__file__).parents[2] / "RELIABILITY.md"


def test_committed_report_lists_every_collected_case(request):
    cases = list(request.config.stash[CASES].values())
    if not cases:
        pytest.skip("no reliability case collected in this session")
    text = REPORT.read_text()
    missing = [case.nodeid for case in cases if _row_start(case) not in text]
    assert not missing, (
        f"regenerate RELIABILITY.md (make reliability); missing or changed: {missing}"
    )


def _row_start(case: Case) -> str:
    return (
        "| "
        + " | ".join(cell.replace("|", "\\|") for cell in (case.input, case.fault, case.expected))
        + " |"
    )


def test_render_groups_cases_and_counts_results():
    cases = [Case("tests/test_a.py::t1", "Area A", "in", "fault", "ok", "pass", ["saw 1"]),
             Case("tests/test_a.py::t2", "Area A", "a|b", "f", "e", "known gap", ["bug"]),
             Case("tests/test_b.py::t3", "Area B", "x", "y", "z")]
    text = render(cases)
    assert "3 cases: 1 known gap, 1 not run, 1 pass." in text
    assert text.index("## Area A") < text.index("## Area B")
    assert "| a\\|b | f | e | bug | known gap | `test_a.py::t2` |" in text
