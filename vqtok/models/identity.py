"""Content hash of a tokenizer: the id that code files store to name the model that made them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

ID_LENGTH = 16


def content_hash(config: Mapping[str, Any], state: Mapping[str, Tensor]) -> str:
    """sha256 (first 16 hex chars) of the config's canonical JSON and every tensor's
    name, dtype, shape and bytes, in name order. Independent of device and of key order."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:ID_LENGTH]
