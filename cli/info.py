"""`vqtok info`: versions, devices and kernel backends."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vqtok.cli.common import out, print_table
from vqtok.pipelines.environment import environment_report


def info(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Print versions, devices, and which backend each kernel will use."""
    report = environment_report()
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(f"Python {report['python']} on {report['platform']}")
    table = Table("package", "version", title="packages")
    for name, version in report["packages"].items():
        table.add_row(name, version or "[dim]not installed[/]")
    print_table(table)
    devices = Table("device", "name", "details", title="devices")
    for d in report["devices"]:
        details = f"{d['threads']} threads" if d["device"] == "cpu" else f"{d['memory_gib']} GiB"
        devices.add_row(str(d["device"]), str(d["name"]), details)
    print_table(devices)
    kernels = Table(
        "kernel", *report["kernel_backend_auto"].keys(), title="kernel backends (backend='auto')"
    )
    for op in ("nearest_code", "ema_update"):
        kernels.add_row(op, *report["kernel_backend_auto"].values())
    print_table(kernels)
    out.print(f"available backends: {', '.join(report['kernel_backends_available'])}")
    for key, value in report["env"].items():
        out.print(f"{key}={value}")


def register(app: typer.Typer) -> None:
    app.command()(info)
