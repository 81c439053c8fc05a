"""LM checkpoints: a directory with ``model.safetensors`` and ``config.json``, as for tokenizers.

``config.json`` holds the format, the vqtok version, ``lm_id`` (the content hash of config
and weights, ``vqtok.models.identity``), a summary (preset, tokenizer id, vocabulary,
layout, classes) and the full LMConfig. Nothing is unpickled, and a checkpoint whose
contents do not hash to its recorded id is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import vqtok
from vqtok.checkpoint import CheckpointError
from vqtok.lm.config import LMConfig
from vqtok.lm.model import TokenLM

FORMAT = "vqtok-lm"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_lm(model: TokenLM, path: str | Path) -> Path:
    """Write ``model`` to the directory ``path`` (created if needed, its files replaced).

    Args:
        model: The LM.
        path: The directory.

    Returns:
        The directory; its ``config.json`` records ``model.lm_id``.

    Raises:
        OSError: A file cannot be written.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: t.detach().cpu().contiguous() for k, t in model.state_dict().items()}
    lm_id = model.lm_id
    weights = directory / WEIGHTS_FILE
    try:
        save_file(state, str(weights), metadata={"format": "pt", "lm_id": lm_id})
    except SafetensorError as exc:  # an I/O failure in the Rust writer, not an OSError
        raise OSError(f"cannot write {weights}: {exc}") from None
    config = model.config
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtok_version": vqtok.__version__,
        "lm_id": lm_id,
        "preset": config.preset,
        "tokenizer_id": config.tokenizer_id,
        "modality": config.modality,
        "vocab_size": config.vocab_size,
        "layout": list(config.layout),
        "num_classes": config.num_classes,
        "config": config.to_dict(),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load_lm(path: str | Path, map_location: str = "cpu") -> TokenLM:
    """Read an LM checkpoint written by ``save_lm``.

    Args:
        path: The directory, or its ``model.safetensors`` or ``config.json``.
        map_location: The device to move the LM to.

    Returns:
        The LM in eval mode.

    Raises:
        CheckpointError: A file is missing, unreadable or not an LM's, the weights do not
            fit the config, or the contents do not hash to the recorded ``lm_id``.
    """
    directory = _directory(Path(path))
    record = _read_record(directory / CONFIG_FILE)
    try:
        model = TokenLM(LMConfig.from_dict(record["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{directory}: cannot rebuild the LM from {CONFIG_FILE}: "
                              f"{error}") from None
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(f"{directory}: corrupt or unreadable LM weights: {error}") from None
    except RuntimeError as error:
        raise CheckpointError(f"{directory}: weights do not fit the configured LM: "
                              f"{error}") from None
    if model.lm_id != record["lm_id"]:
        raise CheckpointError(
            f"{directory}: contents hash to {model.lm_id} but the checkpoint records "
            f"{record['lm_id']}; its files were modified or come from different checkpoints"
        )
    return model.to(map_location).eval()


def _directory(path: Path) -> Path:
    if path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"{path}: no LM checkpoint directory there")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a vqtok LM checkpoint ({name} is missing)")
    return path


def _read_record(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: too large for an LM checkpoint config")
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable LM checkpoint config: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vqtok LM checkpoint config (a tokenizer's?)")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: LM format version {version!r} is not supported by "
                              f"vqtok {vqtok.__version__}; upgrade vqtok")
    if not isinstance(record.get("lm_id"), str) or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{path}: LM checkpoint config lacks 'lm_id' or 'config'")
    return record
