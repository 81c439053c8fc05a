"""Test set-up. Triton reads TRITON_INTERPRET when it is first imported, so it is set here,
before any test module imports vqtok.kernels: the Triton kernels then run on the CPU."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

# The RELIABILITY.md report: the `reliability` marker, the `observed` fixture and --reliability-report.
from reliability import (  # noqa: E402, F401
    observed,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)
