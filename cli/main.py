"""The `vqtok` console entry point.

Ctrl-C must end the command with one line and exit 130 at any moment. While torch, numpy
and the pipelines load, a KeyboardInterrupt raised inside their initialisation can be
swallowed (a C++ extension turns it into an ImportError that an optional import catches,
and the job then runs to completion), abort the process from pybind11, or leave numpy
half-initialised. So the signal is only recorded while the command line loads, and acted
on once it has loaded; after that Ctrl-C interrupts as usual, and each job cleans up.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


def main() -> None:
    """Run the `vqtok` command line; Ctrl-C exits 130 with one line and no traceback."""
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        from vqtok.cli.app import run
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        _interrupted()
    try:
        run()
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        # Typer turns a Ctrl-C outside our jobs into a silent exit 130: still say it once.
        if exc.code == 130 and not sys.modules["vqtok.cli.common"].interrupt_reported:
            _interrupted()
        raise


def _interrupted() -> NoReturn:
    sys.stderr.write("interrupted\n")
    sys.exit(130)


if __name__ == "__main__":
    main()
