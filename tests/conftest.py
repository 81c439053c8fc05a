"""Test set-up. Triton reads TRITON_INTERPRET when it is first imported, so it is set here,
before any test module imports vqtok.kernels: the Triton kernels then run on the CPU."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
