"""The demo: `python -m vqtok.pipelines.demo --out demo-out`, or from Python:

    from vqtok.pipelines.demo import run_demo
    report = run_demo("demo-out")

`run` trains, encodes, decodes, compresses and compares; `report` writes report.md.
Sits on top: may import every other wing.
"""

from vqtok.pipelines.data.builtin import DATA_DIR, DATA_FOLDERS
from vqtok.pipelines.demo.run import MARKER, main, run_demo

__all__ = ["DATA_DIR", "DATA_FOLDERS", "MARKER", "main", "run_demo"]
