"""What `vqtok info` reports: versions, devices, and the backend each kernel will use."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch

from vqtok.kernels import available_backends, choose_backend

PACKAGES = (
    "vqtok", "torch", "torchvision", "torchaudio", "triton", "numpy", "safetensors",
    "webdataset", "soundfile", "av", "pillow", "typer", "rich",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def devices() -> list[dict[str, object]]:
    found: list[dict[str, object]] = [
        {
            "device": "cpu",
            "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        found.append(
            {
                "device": f"cuda:{i}",
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
            }
        )
    return found


def kernel_backends() -> dict[str, str]:
    """Backend that ``backend="auto"`` resolves to, per device type."""
    chosen = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        try:
            chosen[dev] = choose_backend(torch.device(dev))
        except (ValueError, RuntimeError) as err:
            chosen[dev] = f"error: {err}"
    return chosen


def environment_report() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "devices": devices(),
        "kernel_backends_available": available_backends(),
        "kernel_backend_auto": kernel_backends(),
        "env": {
            k: os.environ[k]
            for k in ("VQTOK_KERNEL_BACKEND", "TRITON_INTERPRET")
            if k in os.environ
        },
    }
