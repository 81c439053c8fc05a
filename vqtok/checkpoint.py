"""Tokenizer checkpoints: a directory with ``model.safetensors`` and ``config.json``.

``config.json`` holds the full TokenizerConfig, a summary a person or a data pipeline can
read without torch (preset, quantizer, codebook size, strides, sample rate, fps), the vqtok
version and ``model_id``, the content hash of config and weights. Loading reads tensors with
safetensors and JSON with json: nothing is ever unpickled. The recorded id is checked against
the loaded contents, so edited or mixed-up files are refused.

A model may carry ``code_prior``, the (Q, K) int64 code frequencies that `vqtok compress`
entropy-codes with (see ``vqtok.entropy.prior``). It is stored as the extra tensor
``code_prior`` in ``model.safetensors``, outside the state dict, so fitting a prior does not
change ``model_id``; compressed files name their prior by its own hash.

Continuous-latent models (``vqtok.models.vae_presets``) use the same two files; their config
is a VAEConfig, told apart by its ``family`` key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import vqtok
from vqtok.models.config import TokenizerConfig
from vqtok.models.identity import content_hash
from vqtok.models.tokenizer import VQTokenizer
from vqtok.models.vae import LatentModel
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_presets import build_latent_model

FORMAT = "vqtok-tokenizer"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20
WEIGHTS_FILE = "model.safetensors"
PRIOR_KEY = "code_prior"
CONFIG_FILE = "config.json"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, or does not match what it claims to be."""


def save(model: VQTokenizer | LatentModel, path: str | Path) -> Path:
    """Write ``model`` to the directory ``path``.

    Args:
        model: A tokenizer (with its ``code_prior``, if any) or a continuous-latent model.
        path: The directory; created if needed, its two files replaced.

    Returns:
        The directory. Its ``config.json`` records ``model.model_id``.

    Raises:
        OSError: The directory or a file cannot be written.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    config = model.config.to_dict()
    model_id = model.model_id
    recorded = getattr(model, "recorded_id", None)
    if recorded is not None and model_id == recorded[1]:
        config = recorded[2]  # as first recorded, so that the file still hashes to its id
    tensors = dict(state)
    if getattr(model, "code_prior", None) is not None:
        tensors[PRIOR_KEY] = model.code_prior.detach().cpu().to(torch.int64).contiguous()
    weights = directory / WEIGHTS_FILE
    try:
        save_file(tensors, str(weights), metadata={"format": "pt", "model_id": model_id})
    except SafetensorError as exc:  # an I/O failure in the Rust writer, not an OSError
        raise OSError(f"cannot write {weights}: {exc}") from None
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqtok_version": vqtok.__version__,
        "model_id": model_id,
        **_summary(model),
        "config": config,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def load(path: str | Path, map_location: str = "cpu") -> VQTokenizer | LatentModel:
    """Read a checkpoint written by ``save``.

    Nothing is unpickled: tensors are read with safetensors and the config with json.

    Args:
        path: The checkpoint directory, or its ``model.safetensors`` or ``config.json``.
        map_location: The device to move the model to.

    Returns:
        The model (a ``VQTokenizer`` or a ``LatentModel``) in eval mode on ``map_location``.

    Raises:
        CheckpointError: A file is missing or unreadable, its format version is newer than
            this vqtok reads, the architecture does not match the weights, the code prior is
            malformed, or the contents do not hash to the recorded model id.
    """
    directory = _checkpoint_dir(Path(path))
    record = _read_record(directory / CONFIG_FILE)
    try:
        model = _rebuild(record["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{directory}: cannot rebuild the model from {CONFIG_FILE}: {error}"
        ) from None
    state = _read_weights(directory / WEIGHTS_FILE)
    if isinstance(model, VQTokenizer):
        model.code_prior = _check_prior(state.pop(PRIOR_KEY, None), model, directory)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"{directory}: weights do not fit the configured model: {error}"
        ) from None
    if isinstance(model, VQTokenizer) and model.model_id != record["model_id"]:
        _accept_older_config(model, record)
    if model.model_id != record["model_id"]:
        raise CheckpointError(
            f"{directory}: contents hash to {model.model_id} but the checkpoint records "
            f"{record['model_id']}; its files were modified or come from different checkpoints"
        )
    return model.to(map_location).eval()


def _accept_older_config(model: VQTokenizer, record: dict) -> None:
    """Keep the recorded id of a checkpoint written before the config gained options.

    The id hashes the resolved config; options added to a quantizer since (at defaults that
    keep the old behaviour) change that hash but not the model. When the weights and the
    config as recorded still hash to the recorded id, the model is the one that was saved.
    """
    live = model.model_id
    if content_hash(record["config"], model.state_dict()) == record["model_id"]:
        model.recorded_id = (live, record["model_id"], record["config"])


def _check_prior(
    prior: torch.Tensor | None, model: VQTokenizer, directory: Path
) -> torch.Tensor | None:
    want = (model.num_levels, model.codebook_size)
    if prior is not None and (
        tuple(prior.shape) != want or prior.dtype != torch.int64 or int(prior.min()) < 1
    ):
        raise CheckpointError(f"{directory}: its code prior is not {want} int64 frequencies >= 1")
    return prior


def _rebuild(config: dict[str, Any]) -> VQTokenizer | LatentModel:
    """A tokenizer, or a continuous-latent model when the config names its ``family``."""
    if "family" in config:
        return build_latent_model(VAEConfig.from_dict(config))
    return VQTokenizer(TokenizerConfig.from_dict(config))


def _summary(model: VQTokenizer | LatentModel) -> dict[str, Any]:
    config = model.config
    if isinstance(config, VAEConfig):
        return {"preset": config.preset, "modality": config.modality, "family": config.family,
                "latent_dim": config.latent_dim, "likelihood": config.likelihood,
                "sample_rate": config.sample_rate, "fps": config.fps}
    return {
        "preset": config.preset,
        "modality": config.modality,
        "quantizer": config.quantizer,
        "codebook_size": model.codebook_size,
        "num_levels": model.num_levels,
        "strides": list(config.strides),
        "sample_rate": config.sample_rate,
        "fps": config.fps,
    }


def _checkpoint_dir(path: Path) -> Path:
    if path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"{path}: no checkpoint directory there")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a vqtok checkpoint ({name} is missing)")
    return path


def _read_record(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # a config is a few KiB; a huge one is not ours to parse
            raise CheckpointError(f"{path}: {size} bytes is too large for a checkpoint config "
                                  f"(at most {MAX_CONFIG_BYTES})")
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint config: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vqtok tokenizer checkpoint config")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported by vqtok "
            f"{vqtok.__version__} (reads up to {FORMAT_VERSION}); upgrade vqtok"
        )
    if not isinstance(record.get("model_id"), str) or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{path}: checkpoint config lacks 'model_id' or 'config'")
    return record


def _read_weights(path: Path) -> dict[str, Any]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt or unreadable weights: {error}") from None
