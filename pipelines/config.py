"""One config mechanism for every job.

Job configs are dataclasses that load from TOML/JSON, take overrides, check every field
at once and save what was resolved.

    config = EncodeConfig.load("encode.toml", flags={"runtime.batch_size": 32},
                               overrides=["media.window_seconds=1.5"])
    config.save(out_dir / "encode_config.json")

The order is always: the dataclass defaults, then the file, then the CLI flags that were
given, then ``--set key=value`` (dotted keys reach nested options and dict fields). Unknown
keys, values of the wrong type and values out of range are all reported in one UsageError
before any work starts. Options that several jobs share are nested groups defined here
(`MediaOptions`, `ErrorOptions`, `RuntimeOptions`), so that each default lives in one place.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from vqtok.pipelines.errors import OnError, UsageError

MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpixel (8192 x 8192): far above what a tokenizer consumes

# While `from_dict` builds nested groups, each group skips its own check: the root checks
# the whole tree once, so that every problem is reported together.
_BUILDING = contextvars.ContextVar("building", default=False)


class JobConfig:
    """Base of every job config (a dataclass): load, override, check, save.

    Subclasses list their value rules in `problems()`; types come from the annotations.
    """

    def __post_init__(self) -> None:
        if not _BUILDING.get():
            self.check()

    def problems(self) -> list[str]:
        """Value rules of this config's own fields; nested groups add theirs.

        Returns:
            One message per broken rule (empty when the values are fine).
        """
        return []

    def check(self) -> None:
        """Raise one UsageError listing every wrong type or value, nested groups included.

        Raises:
            UsageError: when any field is of the wrong type or out of range.
        """
        found = _type_problems(self, "")
        if not found:
            found = _value_problems(self, "")
        if found:
            raise UsageError(_listing(found, type(self).__name__))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> Self:
        """Build from plain data (as read from TOML/JSON), refusing unknown keys.

        Args:
            data: field values; nested groups as tables.
            source: where the data came from, for messages.

        Returns:
            The checked config.

        Raises:
            UsageError: listing every unknown key, wrong type and bad value.
        """
        found = _unknown_keys(cls, data, "")
        if found:
            raise UsageError(_listing(found, source))
        token = _BUILDING.set(True)
        try:
            config = _build(cls, data)
        finally:
            _BUILDING.reset(token)
        found = _type_problems(config, "") or _value_problems(config, "")
        if found:
            raise UsageError(_listing(found, source))
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Read a TOML (``.toml``) or JSON file.

        Args:
            path: The config file; JSON unless it ends in ``.toml``.

        Returns:
            The checked config.

        Raises:
            UsageError: when the file cannot be read or parsed, or holds bad keys or values.
        """
        return cls.from_dict(read_config_file(path), source=str(path))

    @classmethod
    def load(cls, path: str | Path | None = None, flags: Mapping[str, Any] | None = None,
             overrides: Iterable[str] = ()) -> Self:
        """Defaults, then the file at `path`, then `flags` that are not None, then `overrides`.

        Args:
            path: a TOML or JSON config file, or None.
            flags: dotted key -> value, as given on the command line (None: not given).
            overrides: ``key=value`` strings; the value is read as TOML, else as a string.

        Returns:
            The resolved, checked config.

        Raises:
            UsageError: for an unreadable file or any bad key, type or value.
        """
        base = cls.from_file(path) if path is not None else None
        data = base.to_dict() if base is not None else cls._defaults()
        for key, value in (flags or {}).items():
            if value is not None:
                assign(data, key, value.value if hasattr(value, "value") else value)
        return cls._with_assignments(data, overrides, "flags" if path is None else str(path))

    def with_overrides(self, overrides: Iterable[str]) -> Self:
        """A copy with ``key=value`` strings applied (values read as TOML, else as strings).

        Args:
            overrides: ``key=value`` strings; dotted keys reach nested groups.

        Returns:
            The new, checked config; this one is unchanged.

        Raises:
            UsageError: for a malformed assignment or any bad key, type or value.
        """
        return self._with_assignments(self.to_dict(), overrides, "config")

    @classmethod
    def _with_assignments(cls, data: dict[str, Any], overrides: Iterable[str], source: str) -> Self:
        overrides = list(overrides)
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--set expects key=value, got {text!r}")
            assign(data, key.strip(), parse_value(value.strip()))
        return cls.from_dict(data, source="--set" if overrides else source)

    @classmethod
    def _defaults(cls) -> dict[str, Any]:
        token = _BUILDING.set(True)
        try:
            return cls().to_dict()
        finally:
            _BUILDING.reset(token)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists), as `from_dict` reads it back.

        Returns:
            Field name -> value, nested groups as dicts.
        """
        return _plain(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """The config as TOML text.

        Returns:
            The TOML text; None values are left out (they are the defaults' None).
        """
        import tomli_w  # here, so that the kernel benchmark imports with torch alone

        return tomli_w.dumps(_without_none(self.to_dict()))

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write the config as TOML (``.toml``) or JSON (else).

        Args:
            path: The file to write; its folder is made if missing.
            **extra: Keys written beside the config, in JSON only (e.g. the model id a job
                ran with).

        Returns:
            `path`, as a Path.

        Raises:
            OSError: when the file cannot be written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".toml":
            path.write_text(self.to_toml())
        else:
            path.write_text(json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")
        return path


@dataclass
class MediaOptions(JobConfig):
    """How media is cut into model inputs, for every job that encodes media.

    window_seconds: audio window length (None: the whole file, one code stream; `vqtok
    encode` cuts windows from the whole file's codes, `compress` from the signal).
    clip_frames: video clip length in frames (None: the whole video), cut like the windows.
    clip_stride: video frames between clip starts (None: the clip length, no overlap).
    frame_size: resize video frames to (H, W) (None: native). max_side: shrink images and
    video frames so that their longer side is at most this many pixels, keeping the aspect
    (None: native). max_image_pixels: refuse images and frames larger than this many pixels
    before decoding them (None leaves only Pillow's own decompression-bomb check). mono: mix
    multichannel audio down for a 1-channel model (without it such files are refused, not
    averaged).
    """

    window_seconds: float | None = None
    clip_frames: int | None = None
    clip_stride: int | None = None
    frame_size: tuple[int, int] | None = None
    max_side: int | None = None
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    mono: bool = False

    def problems(self) -> list[str]:
        """Positive window, clip, stride, frame size, side and pixel limit.

        Returns:
            One message per broken rule.
        """
        found = []
        window = self.window_seconds
        if window is not None and not (math.isfinite(window) and window > 0):
            found.append(f"window_seconds must be a positive number, got {window}")
        for name in ("clip_frames", "clip_stride", "max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                found.append(f"{name} must be at least 1, got {value}")
        if self.frame_size is not None and min(self.frame_size) < 1:
            found.append(f"frame_size must be positive, got {list(self.frame_size)}")
        if self.frame_size is not None and self.max_side is not None:
            found.append("frame_size and max_side both resize frames: give one of them")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            found.append(f"max_image_pixels must be at least 1, got {self.max_image_pixels}")
        return found


@dataclass
class ErrorOptions(JobConfig):
    """What a job does with a bad sample: stop ("raise"), or count, log and go on ("skip").

    With "skip" the job fails at the end when more than `max_error_rate` of the samples
    were skipped.
    """

    on_error: OnError = "raise"
    max_error_rate: float = 1.0

    def problems(self) -> list[str]:
        """`max_error_rate` lies in [0, 1].

        Returns:
            One message per broken rule.
        """
        if not 0.0 <= self.max_error_rate <= 1.0:
            return [f"max_error_rate must lie in [0, 1], got {self.max_error_rate}"]
        return []


@dataclass
class RuntimeOptions(JobConfig):
    """Where the model runs, how many inputs it takes at once, and its memory budget.

    max_memory: the most memory, in bytes, that one model call may add for its activations
    (a number, or a size such as "2GiB", "512MiB" or "1.5G"; see `parse_size`). Inputs whose
    whole pass fits go through the model as they are, in batches of `batch_size`; larger ones
    are cut into time chunks and spatial tiles whose codes and media equal the whole input's
    (`VQTokenizer.encode_within`, `decode_within`). None: `default_max_memory()`, a quarter
    of the memory this process may use. The process also holds the model's weights, the
    interpreter and the decoded batch, which the budget does not count.
    """

    batch_size: int = 16
    device: str = "cpu"
    max_memory: int | str | None = None

    def problems(self) -> list[str]:
        """A batch size of at least 1, a non-blank device and a readable, positive budget.

        Returns:
            One message per broken rule.
        """
        found = (
            []
            if self.batch_size >= 1
            else [f"batch_size must be at least 1, got {self.batch_size}"]
        )
        if not self.device.strip():
            found.append("device must name a torch device, e.g. cpu or cuda")
        if self.max_memory is not None:
            try:
                parse_size(self.max_memory)
            except ValueError as exc:
                found.append(f"max_memory {exc}")
        return found

    def max_bytes(self) -> int:
        """The budget in bytes: `max_memory` read, or the machine's default when None.

        Returns:
            Bytes, >= 1.
        """
        if self.max_memory is None:
            return default_max_memory()
        return parse_size(self.max_memory)

    def resolved(self) -> RuntimeOptions:
        """A copy whose `max_memory` is the byte count this job runs with (what jobs save).

        Returns:
            The new options; these are unchanged.
        """
        return dataclasses.replace(self, max_memory=self.max_bytes())


# A quarter of what the process may use leaves room for the weights, the decoded inputs,
# DataLoader workers and whatever else runs on the machine.
DEFAULT_MEMORY_FRACTION = 0.25

_UNITS = {
    "": 1, "b": 1,
    "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20,
    "g": 2**30, "gib": 2**30, "t": 2**40, "tib": 2**40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}


def parse_size(value: int | float | str) -> int:
    """A memory size in bytes, from a number of bytes or a string such as "2GiB".

    Units, case-insensitive: B; KiB, MiB, GiB, TiB and their short forms K, M, G, T are
    powers of 1024; kB, MB, GB, TB are powers of 1000. Fractions are allowed ("1.5G").

    Args:
        value: Bytes as a number, or a number with a unit.

    Returns:
        The size in whole bytes (rounded down), at least 1.

    Raises:
        ValueError: The text is not a size, or the size is not positive and finite.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a size such as 2GiB or 512MiB, got {value!r}")
    if isinstance(value, int | float):
        number, unit, text = float(value), "", repr(value)
    else:
        text = value.strip()
        match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)", text)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(
                f"must be a size such as 2GiB, 512MiB, 1.5G or a number of bytes, got {value!r}"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1 or size >= 2**63:
        raise ValueError(f"must be a positive, finite size of at least 1 byte, got {text}")
    return int(size)


def format_size(size: int) -> str:
    """`size` bytes as a short binary size, e.g. "3.9 GiB".

    Args:
        size: Bytes.

    Returns:
        The text, in the largest unit that keeps the number at least 1.
    """
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def available_memory() -> int:
    """The memory this process may use: physical memory, or a smaller cgroup limit.

    Returns:
        Bytes (physical memory when no limit can be read).
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # cgroup v2 says "max" when unlimited; v1 a huge number
            total = min(total, int(text))
    return total


def default_max_memory() -> int:
    """The default budget of one model call: `DEFAULT_MEMORY_FRACTION` of `available_memory`.

    Returns:
        Bytes.
    """
    return max(1, int(DEFAULT_MEMORY_FRACTION * available_memory()))


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, list, inline table, quoted string), else the text itself.

    Args:
        text: The value part of a ``key=value`` override.

    Returns:
        The parsed TOML value, or `text` unchanged when it is not valid TOML.
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table of a TOML (``.toml``) or JSON config file, unchecked.

    Args:
        path: The config file; JSON unless it ends in ``.toml``.

    Returns:
        Its keys and values as read.

    Raises:
        UsageError: when the file cannot be read or parsed, or is not a table.
    """
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix != ".json" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config {path} must hold a table of keys, not {type(data).__name__}")
    return data


def assign(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted `key` ("runtime.batch_size") in nested `data`, making tables on the way.

    Args:
        data: Nested plain config data, changed in place.
        key: A field name, dotted for nested groups.
        value: The value to set.

    Raises:
            UsageError: when the path runs through a value that is not a table.
    """
    *path, last = key.split(".")
    table = data
    for part in path:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise UsageError(f"{key}: {part} is not a table of options")
    table[last] = value


def _listing(found: list[str], source: str) -> str:
    if len(found) == 1:
        return f"{source}: {found[0]}"
    return f"{len(found)} problems in {source}:\n" + "\n".join(f"  - {item}" for item in found)


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _group(hint: Any) -> type | None:
    """The nested config class a field holds, if any."""
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _unknown_keys(cls: type, data: Mapping[str, Any], prefix: str) -> list[str]:
    if not isinstance(data, Mapping):
        return [f"{prefix.rstrip('.')} must be a table of options, got {data!r}"]
    fields = _fields(cls)
    found = []
    for key, value in data.items():
        if key not in fields:
            found.append(
                f"unknown key {prefix}{key} (known: {', '.join(prefix + k for k in fields)})"
            )
        elif (group := _group(fields[key])) is not None:
            found += _unknown_keys(group, value, f"{prefix}{key}.")
    return found


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    fields = _fields(cls)
    values = {}
    for key, value in data.items():
        group = _group(fields[key])
        values[key] = _build(group, value) if group is not None else _coerce(value, fields[key])
    return cls(**values)


def _coerce(value: Any, hint: Any) -> Any:
    """TOML and JSON have no tuples: a list for a tuple field becomes a tuple."""
    tuple_hint = any(typing.get_origin(h) is tuple for h in (hint, *typing.get_args(hint)))
    return tuple(value) if tuple_hint and isinstance(value, list) else value


def _type_problems(config: Any, prefix: str) -> list[str]:
    found = []
    for name, hint in _fields(type(config)).items():
        value = getattr(config, name)
        if _group(hint) is not None:
            found += (_type_problems(value, f"{prefix}{name}.") if isinstance(value, hint)
                      else [f"{prefix}{name} must be a table of options, got {value!r}"])
        elif not _fits(value, hint):
            found.append(
                f"{prefix}{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__})"
            )
        elif _too_large(value):
            found.append(f"{prefix}{name} is out of range: {value}")
    return found


def _too_large(value: Any) -> bool:
    """Integers that torch, numpy and the file formats cannot hold (beyond int64)."""
    if isinstance(value, list | tuple):
        return any(_too_large(v) for v in value)
    return isinstance(value, int) and not -(2**63) <= value < 2**63


def _value_problems(config: Any, prefix: str) -> list[str]:
    found = [f"{prefix}{item}" for item in config.problems()]
    for name, hint in _fields(type(config)).items():
        if _group(hint) is not None:
            found += _value_problems(getattr(config, name), f"{prefix}{name}.")
    return found


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` fits the annotation (int for float is fine, bool for int is not)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:
        return (isinstance(value, tuple | list) and len(value) == len(args)
                and all(_fits(v, a) for v, a in zip(value, args, strict=True)))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return (
        getattr(hint, "__name__", None)
        if not typing.get_args(hint)
        else str(hint).replace("typing.", "")
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value
