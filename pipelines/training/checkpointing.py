"""Training checkpoints: everything needed to continue a run exactly, without pickle.

A checkpoint is a directory ``OUT/checkpoints/step-00001234/`` holding

- ``model.safetensors``: the model's state dict; ``ema.safetensors``: the EMA weights;
- ``transient.safetensors``: buffers left out of the state dict (the quantizers' code-usage
  windows), which decide future dead-code restarts;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors, flattened as
  ``"<param index>.<name>"``;
- ``rng.safetensors``: each rank's torch (CPU and CUDA) and NumPy generator states;
- ``<part>.safetensors`` and ``<part>_optimizer.safetensors``: the state dict and optimizer
  of each extra trained part (``discriminator``: the critics and their LeCam averages;
  ``balancer``: the loss balancer's gradient-norm averages), when the run has them;
- ``state.json``: the step, each rank's data position, the scheduler and optimizer
  hyper-parameters, Python's random state, the usage-window counters and the best metric.

Directories are written under a temporary name and renamed, so a crash never leaves a
half-written checkpoint that looks complete; only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import random
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vqtok.pipelines.errors import PipelineError, UsageError
from vqtok.pipelines.training.data import DataPosition
from vqtok.quantizers.usage import CodeUsage

STEP_PREFIX = "step-"
STATE_FILE = "state.json"
# An extra trained part: its module (state dict) and its optimizer, if it has one.
Part = tuple[nn.Module, torch.optim.Optimizer | None]


@dataclass
class RunState:
    """The non-tensor progress of a run: ``positions`` holds one DataPosition per rank."""

    step: int = 0
    positions: list[DataPosition] = field(default_factory=lambda: [DataPosition()])
    best: float | None = None


def rng_state() -> dict[str, Any]:
    """This process's generator states: tensors under "torch*"/"numpy", the rest JSON-able."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [kind, int(pos), int(has_gauss), float(cached)],
        "python": _jsonable(random.getstate()),
    }
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda{index}"] = cuda_state
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    kind, pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((kind, state["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for key, value in state.items():
        if key.startswith("torch_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state(value, int(key.removeprefix("torch_cuda")))


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    # A step-N.partial directory is a checkpoint whose writer died before the rename.
    found = [
        p
        for p in root.glob(f"{STEP_PREFIX}*")
        if p.is_dir() and p.name.removeprefix(STEP_PREFIX).isdigit() and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix(STEP_PREFIX)))


def save_checkpoint(
    run_dir: Path,
    state: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: nn.Module | None,
    rng_states: Sequence[dict[str, Any]],
    keep_last: int,
    parts: Mapping[str, Part] | None = None,
) -> Path:
    """Write a checkpoint of step ``state.step`` and prune old ones.

    ``rng_states`` holds one state per rank; ``parts`` names extra trained modules (the
    discriminator, the balancer) with their optimizers.
    """
    final = step_dir(run_dir, state.step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(_cpu(model.state_dict()), str(partial / "model.safetensors"))
    if ema is not None:
        save_file(_cpu(ema.state_dict()), str(partial / "ema.safetensors"))
    transient, windows = _usage_windows(model)
    save_file(transient, str(partial / "transient.safetensors"))
    optimizer_tensors, optimizer_rest = _flatten_optimizer(optimizer.state_dict())
    save_file(optimizer_tensors, str(partial / "optimizer.safetensors"))
    rng_tensors = {f"rank{r}.{k}": v for r, s in enumerate(rng_states) for k, v in s.items()
                   if isinstance(v, torch.Tensor)}
    save_file(rng_tensors, str(partial / "rng.safetensors"))
    part_optimizers = {}
    for name, (module, part_optimizer) in (parts or {}).items():
        save_file(_cpu(module.state_dict()), str(partial / f"{name}.safetensors"))
        if part_optimizer is not None:
            tensors, part_optimizers[name] = _flatten_optimizer(part_optimizer.state_dict())
            save_file(tensors, str(partial / f"{name}_optimizer.safetensors"))
    record = {
        "step": state.step,
        "positions": [[p.epoch, p.batch] for p in state.positions],
        "best": state.best,
        "scheduler": scheduler.state_dict(),
        "optimizer": optimizer_rest,
        "usage_windows": windows,
        "part_optimizers": part_optimizers,
        "rng": [
            {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)} for s in rng_states
        ],
    }
    (partial / STATE_FILE).write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)
    return final


def check_resumable(run_dir: Path, model: str, model_options: dict[str, Any]) -> None:
    """A resumed run builds the model its folder was trained with.

    Checked before anything is written, so that a refused resume leaves the run folder
    (its config.toml among them) as it was.

    Args:
        run_dir: The run folder, holding the config.toml its first start saved.
        model: The registry name this start would build.
        model_options: Its config overrides.

    Raises:
        UsageError: The folder's run used another model or other model options.
    """
    try:
        saved = tomllib.loads((run_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return  # nothing to compare; the checkpoint itself is checked when it loads
    then = (saved.get("model"), saved.get("model_options", {}))
    if then != (model, dict(model_options)):
        raise UsageError(
            f"--resume: {run_dir} trains {then[0]} with model_options {then[1]}, not {model} "
            f"with {dict(model_options)}; resume with the run's own model, or choose another "
            "--out"
        )


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, ema: nn.Module | None,
                    rank: int, world_size: int,
                    parts: Mapping[str, Part] | None = None) -> RunState:
    """Restore everything ``save_checkpoint`` wrote into the given objects and this rank's
    generators; returns the run state. Raises PipelineError on a mismatched run (one
    without a part, e.g. the discriminator, that this run trains)."""
    try:
        record = json.loads((path / STATE_FILE).read_text())
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        if ema is not None:
            if not (path / "ema.safetensors").is_file():
                raise PipelineError(
                    f"{path} has no EMA weights but this run keeps an EMA (ema_decay > 0)"
                )
            ema.load_state_dict(load_file(str(path / "ema.safetensors")))
        _restore_usage_windows(
            model, load_file(str(path / "transient.safetensors")), record["usage_windows"]
        )
        optimizer.load_state_dict(
            _unflatten_optimizer(
                load_file(str(path / "optimizer.safetensors")), record["optimizer"]
            )
        )
        scheduler.load_state_dict(record["scheduler"])
        _load_parts(path, parts or {}, record.get("part_optimizers", {}))
        if len(record["positions"]) != world_size:
            raise PipelineError(f"{path} was written by {len(record['positions'])} rank(s); "
                                f"resume it with the same number, not {world_size}")
        rng = load_file(str(path / "rng.safetensors"))
        prefix = f"rank{rank}."
        mine = {k.removeprefix(prefix): v for k, v in rng.items() if k.startswith(prefix)}
        set_rng_state({**record["rng"][rank], **mine})
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        # load_state_dict lists every missing and unexpected key: kilobytes; the first
        # line says what happened.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot resume from {path}: {first[:300]}") from None
    positions = [DataPosition(*p) for p in record["positions"]]
    return RunState(step=record["step"], positions=positions, best=record["best"])


def _load_parts(path: Path, parts: Mapping[str, Part], optimizers: dict[str, Any]) -> None:
    for name, (module, part_optimizer) in parts.items():
        if not (path / f"{name}.safetensors").is_file():
            raise PipelineError(f"{path} has no {name} state but this run trains one; resume "
                                "with the run's own settings (e.g. adversarial, balancer)")
        module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
        if part_optimizer is not None:
            part_optimizer.load_state_dict(_unflatten_optimizer(
                load_file(str(path / f"{name}_optimizer.safetensors")), optimizers[name]))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _usage_windows(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The code-usage windows' ring and histogram (kept out of the state dict) and counters.

    CodeUsage has no public state API yet, so its private ring is read here.
    """
    tensors: dict[str, torch.Tensor] = {}
    counters: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, CodeUsage):
            tensors[f"{name}.ring"] = module._ring.detach().cpu().clone()
            tensors[f"{name}.histogram"] = module.histogram.detach().cpu().clone()
            counters[name] = [module._position, module._filled]
    return tensors, counters


def _restore_usage_windows(model: nn.Module, tensors: dict[str, torch.Tensor],
                           counters: dict[str, list[int]]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, CodeUsage):
            module._ring = tensors[f"{name}.ring"].to(module.histogram.device)
            module.histogram.copy_(tensors[f"{name}.histogram"])
            module._position, module._filled = counters[name]


def _flatten_optimizer(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into named tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}
