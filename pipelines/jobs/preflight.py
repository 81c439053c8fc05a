"""Checks that run before a job writes anything: device, output folder, inputs, resume.

A job that cannot succeed must say so at once, with exit 2, and leave its output folder as
it found it. Each check here raises `UsageError` with a message that names the condition;
`check_all` gathers several so that the user sees every problem in one message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from vqtok.pipelines.data.media import EXTENSIONS
from vqtok.pipelines.data.tario import Sample, read_samples
from vqtok.pipelines.errors import UsageError

# Options that do not change what a job writes: a resumed job may change them (batch size,
# device, workers, progress; and the error policy, since resuming with `--on-error skip`
# after a bad sample stopped the job is the usual way on). All others must stay the same.
_RUNTIME_KEYS = {"runtime", "workers", "progress", "resume", "shards", "errors"}
_MEDIA_EXTENSIONS = {ext for exts in EXTENSIONS.values() for ext in exts}


def check_all(checks: Iterable[Callable[[], Any]]) -> None:
    """Run every check; raise one UsageError listing all that failed.

    Args:
        checks: Callables that raise UsageError on a problem.

    Raises:
        UsageError: Listing every failed check, one per line.
    """
    found = []
    for check in checks:
        try:
            check()
        except UsageError as exc:
            found.append(str(exc))
    if len(found) == 1:
        raise UsageError(found[0])
    if found:
        raise UsageError(f"{len(found)} problems:\n" + "\n".join(f"  - {f}" for f in found))


def check_device(name: str) -> torch.device:
    """The torch device `name`, refused when this machine does not have it.

    Args:
        name: A torch device string, e.g. "cpu", "cuda", "cuda:1", "mps".

    Returns:
        The device.

    Raises:
        UsageError: The name is not a device, or the device is not available here.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"--device {name!r} is not a torch device: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: vqtok runs on cpu, cuda or mps")
    return device


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """`path` can be (or become) a folder this process may write in.

    Args:
        path: The folder a job will write; it may not exist yet.
        what: How messages name it.

    Returns:
        `path` as a Path.

    Raises:
        UsageError: The path is an existing file, or the folder (or the nearest existing
            folder above it) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is an existing file, not a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {existing} is not writable by this user")
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """`path` can be written as a file: not a folder, in a writable folder.

    Args:
        path: The file a job will write.
        what: How messages name it.

    Returns:
        `path` as a Path.

    Raises:
        UsageError: The path is a folder, or its folder cannot be made or written.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path} exists and is not writable by this user")
    check_output_folder(path.parent, f"the folder of {what}")
    return path


def shard_folder(urls: Iterable[str]) -> Path | None:
    """The local folder that holds all of `urls`.

    Args:
        urls: Shard URLs.

    Returns:
        The folder, or None for remote shards or shards in several folders.
    """
    folders = {Path(url).parent for url in urls if "://" not in url and not url.startswith("pipe:")}
    return folders.pop() if len(folders) == 1 else None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`.

    Args:
        path: A JSON file.

    Returns:
        The object, or None when the file is missing, unreadable or not an object.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_media_input(urls: list[str], modality: str) -> None:
    """Media shards given to a job that encodes them match the model's modality.

    Reads the `shards.json` that `vqtok shards make` writes and the `encode_config.json`
    that marks code shards; shards without either are checked sample by sample later.

    Args:
        urls: The shard URLs.
        modality: The model's modality ("audio", "image" or "video").

    Raises:
        UsageError: The shards are code shards, or media of another modality.
    """
    folder = shard_folder(urls)
    if folder is None:
        return
    if (folder / "encode_config.json").is_file():
        raise UsageError(
            f"{folder} holds code shards (written by `vqtok encode`); this job reads media "
            "shards (made by `vqtok shards make`)"
        )
    made = read_json(folder / "shards.json")
    recorded = made.get("modality") if made else None
    if recorded and recorded != modality:
        raise UsageError(
            f"{folder} holds {recorded} shards (see its shards.json), but the checkpoint is "
            f"a model for {modality}"
        )


def check_code_input(urls: list[str], model_id: str, command: str) -> None:
    """Code shards given to decode/export-tokens/fit-prior are code shards of this model.

    Args:
        urls: The shard URLs.
        model_id: The checkpoint's model id, or "" to accept codes of any model.
        command: The command, for messages.

    Raises:
        UsageError: The folder holds media shards, or codes of another model.
    """
    _check_first_sample(urls, command)
    folder = shard_folder(urls)
    if folder is None:
        return
    encoded = read_json(folder / "encode_config.json")
    if encoded is None:
        made = read_json(folder / "shards.json")
        if made and made.get("modality"):
            raise UsageError(
                f"{folder} holds {made['modality']} media shards (made by `vqtok shards "
                f"make`); {command} reads the code shards that `vqtok encode` writes"
            )
        return
    if model_id and encoded.get("model_id") not in (None, model_id):
        raise UsageError(
            f"{folder} holds codes of model {encoded['model_id']}, not of this checkpoint "
            f"({model_id}); give the checkpoint that encoded them"
        )


def check_resume(
    out_dir: Path, filename: str, config: Mapping[str, Any], model_id: str, resume: bool
) -> None:
    """A resumed job continues the job that wrote `out_dir`, not another one.

    Args:
        out_dir: The output folder.
        filename: The config the earlier job saved there, e.g. "encode_config.json".
        config: This job's resolved config (plain data).
        model_id: This job's model id.
        resume: Whether this job resumes; without it nothing is compared.

    Raises:
        UsageError: The earlier job used another model, or options that change the output.
    """
    if not resume:
        return
    earlier = read_json(out_dir / filename)
    if earlier is None:
        return
    if earlier.get("model_id") not in (None, model_id):
        raise UsageError(
            f"--resume: {out_dir} holds the output of model {earlier['model_id']}, not of "
            f"this checkpoint ({model_id}); resume with that checkpoint, or choose another "
            "folder"
        )
    now = _leaves(json.loads(json.dumps(dict(config))))
    then = _leaves(earlier)
    # An option the earlier job's vqtok did not have yet ran at its neutral value (None or
    # False, as new options default): asking for more now (max_side, a clip) changes output.
    changed = [
        key for key, value in now.items()
        if key.split(".")[0] not in _RUNTIME_KEYS
        and (then[key] != value if key in then else value not in (None, False))
    ]
    if changed:
        details = "; ".join(
            f"{k} was {repr(then[k]) if k in then else 'unset'}, now {now[k]!r}"
            for k in changed
        )
        raise UsageError(
            f"--resume: {out_dir} was written with other options ({details}); resume with the "
            "same options, or choose another folder"
        )


def _leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as dotted key -> value."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_first_sample(urls: list[str], command: str) -> None:
    """Refuse media shards that carry no shards.json, from their first sample.

    Raises:
        UsageError: The first sample of the first local shard holds media and no codes.
    """
    local = [url for url in urls if Path(url).is_file()]
    if not local:
        return
    first = next(read_samples(local[0]), None)
    if not isinstance(first, Sample) or "json" in first.fields:
        return
    media = sorted(ext for ext in first.fields if ext.lower() in _MEDIA_EXTENSIONS)
    if media:
        raise UsageError(
            f"{local[0]} holds media ({', '.join(media)}), not codes; {command} reads the "
            "code shards that `vqtok encode` writes"
        )
