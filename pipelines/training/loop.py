"""The trainer: one loop for every model of the registry, alone or under torchrun (DDP).

The model interface is ``model(x) -> (x_hat, losses, stats)``: ``losses`` are weighted
scalar tensors (a quantizer's commitment loss, a VAE's KL...) whose "reconstruction" entry
is replaced by this package's per-modality reconstruction loss (models without one, like the
VAEs, bring their own likelihood); ``stats`` are floats to log. A model with ``set_step``
is told each step before it runs (the VAEs' KL warm-up).

Each step: forward under bf16 autocast on CUDA (quantizers keep themselves in fp32),
backward, gradient clipping, AdamW, warm-up + cosine schedule, optional weight EMA. With
``adversarial`` set, from ``adversarial_start`` on, a discriminator scores the
reconstructions: its generator terms join the loss, and it takes its own AdamW step on the
same batch (``adversarial.py``); an optional loss balancer replaces the plain backward. Under
torchrun every rank reads its own shards, DDP averages gradients (the discriminator's too)
and the quantizers all-reduce their codebook statistics; rank 0 validates, logs and writes
checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import vqtok
from vqtok.models.discriminators import build_discriminator
from vqtok.pipelines.data.sources import Placement, expand_shards
from vqtok.pipelines.errors import PipelineError, SampleError, UsageError
from vqtok.pipelines.folder_lock import FolderLock
from vqtok.pipelines.training.adversarial import (
    RECONSTRUCTION_TERMS,
    Adversary,
    LossBalancer,
    last_layer,
)
from vqtok.pipelines.training.checkpointing import (
    RunState,
    check_resumable,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from vqtok.pipelines.training.config import BEST_METRICS, TrainConfig
from vqtok.pipelines.training.data import (
    CropBatches,
    DataPosition,
    check_readable,
    epoch_loader,
    input_options,
    media_for,
    resolve_crop,
    training_batches,
)
from vqtok.pipelines.training.ema import WeightEMA
from vqtok.pipelines.training.losses import ReconstructionLoss
from vqtok.pipelines.training.metrics import ValidationMetrics
from vqtok.pipelines.training.pictures import save_reconstruction_picture
from vqtok.pipelines.training.runlog import RunLogger

StepCallback = Callable[[int, dict[str, float]], None]


class TrainingInterrupted(PipelineError):
    """Ctrl-C: a checkpoint of the last finished step was written (the CLI exits 130)."""


class TrainingDiverged(PipelineError):
    """The loss became NaN or infinite; the weights of that step were not applied."""


@dataclass
class TrainSummary:
    """What a finished run produced; also written to ``OUT/summary.json``."""

    steps: int
    loss: float
    seconds: float
    checkpoint: str
    final_model: str
    best_model: str | None = None
    best: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    samples_skipped: int = 0
    replica_hashes: list[str] = field(default_factory=list)  # model[-critic] per rank

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data.

        Returns:
            The fields as a dict (the content of ``OUT/summary.json``).
        """
        return dataclasses.asdict(self)


def warmup_cosine(config: TrainConfig) -> Callable[[int], float]:
    """LR multiplier at a step: linear warm-up to 1, then cosine down to ``min_lr_ratio``.

    Args:
        config: Gives ``warmup_steps``, ``steps`` and ``min_lr_ratio``.

    Returns:
        step -> multiplier, for ``LambdaLR``.
    """
    warmup, total, floor = config.warmup_steps, config.steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          callbacks: Sequence[StepCallback] = ()) -> TrainSummary:
    """Run ``config`` to its last step (or continue its latest checkpoint with ``resume``).

    Args:
        config: The run: model, data, optimization, schedule, output folder ``out``.
        resume: Continue from the latest checkpoint in ``out`` (else ``out`` must hold
            none).
        progress: Show a progress bar (rank 0).
        callbacks: Called on every rank after each step with (step, logged values).

    Returns:
        What the run produced: steps, loss, time, the last checkpoint, the final and best
        models, validation results, skipped samples and the ranks' weight hashes.

    Raises:
        UsageError: For bad configs and data, before any step.
        TrainingDiverged: On a non-finite loss.
        TrainingInterrupted: After Ctrl-C, once the checkpoint is written.
        PipelineError: For other failures (e.g. too many bad samples).
    """
    trainer = Trainer(config, resume=resume, progress=progress)
    try:
        return trainer.run(callbacks)
    finally:
        trainer.close()


def _resolve_device(name: str) -> torch.device:
    if name != "auto":
        try:
            return torch.device(name)
        except RuntimeError as exc:
            raise UsageError(f"device: {exc}") from None
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _init_distributed(device: torch.device) -> Placement:
    placement = Placement.from_env()
    if placement.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return placement


def _build_model(config: TrainConfig) -> nn.Module:
    if config.model not in vqtok.list_models():
        raise UsageError(f"unknown model {config.model!r}; known: {', '.join(vqtok.list_models())}")
    try:
        return vqtok.create_model(config.model, **config.model_options)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"model_options do not fit {config.model}: {exc}") from None


def _expand(specs: list[str], what: str) -> list[str]:
    if not specs:
        raise UsageError(f"no {what} shards given")
    return expand_shards(specs)


def replica_hash(model: nn.Module) -> str:
    """sha256 of every tensor of the state dict.

    Args:
        model: The model whose state dict is hashed.

    Returns:
        The first 16 hex digits: equal on ranks whose weights agree bit for bit.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class Trainer:
    """Holds a run's pieces; ``run`` trains.

    Construction does every check that can fail on bad input, so that nothing has started
    when a UsageError is raised.

    Args:
        config: The run, as for ``train``.
        resume: Continue from the latest checkpoint in ``config.out``.
        progress: Show a progress bar (rank 0).
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        config.check()
        self.out = Path(config.out)
        self.device = _resolve_device(config.device)
        self.placement = _init_distributed(self.device)
        self.rank0 = self.placement.rank == 0
        self._seed(config)
        train_shards = _expand(config.train, "training")
        self.val_shards = expand_shards(config.val) if config.val else []
        self.model = _build_model(config).to(self.device)
        model_config = self.model.config
        self.inputs = input_options(model_config)  # conditions, binarization
        self.config = dataclasses.replace(config, crop=resolve_crop(model_config, config.crop))
        self.media = media_for(model_config, self.config.crop, self.config.mono)
        self.train_shards = self.placement.select(train_shards)
        check_readable(self.train_shards, self.media, "training")
        if self.val_shards:
            check_readable(self.val_shards, self.media, "validation")
        self.adversary = self._build_adversary()
        self.resume_from = self._checkpoint_to_resume(resume)
        self._build_optimization()
        self.logger = RunLogger(self.out, enabled=self.rank0, progress=progress,
                                tensorboard=self.config.tensorboard)
        self.state = RunState(positions=[DataPosition()] * self.placement.world_size)
        self.skipped: list[SampleError] = []
        self.stop_requested = False
        self.agreed_stop = False
        self.last_validation: dict[str, float] = {}

    def _seed(self, config: TrainConfig) -> None:
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        """The checkpoint to continue, once the run folder is checked and locked.

        Everything that can refuse the start is checked before the folder is touched; then
        this process holds the folder (`FolderLock`) until `close`.

        Raises:
            UsageError: The folder holds checkpoints and `resume` is off, holds a run of
                another model, or is in use by another job.
        """
        existing = list_checkpoints(self.out)
        if existing and not resume:
            raise UsageError(f"{self.out} already holds checkpoints; pass --resume to continue "
                             "that run, or choose another --out")
        if existing:
            check_resumable(self.out, self.config.model,
                            getattr(self.config, "model_options", {}))
        self.folder_lock = FolderLock(self.out, "train", self.placement.rank)
        self.folder_lock.acquire()
        return existing[-1] if resume and existing else None

    def _build_adversary(self) -> Adversary | None:
        """The discriminator and its loss state, checked against the model and the crop.

        Raises:
            UsageError: The model is not a tokenizer with a decoder, the discriminator does
                not fit its modality, or the crop is too small for it.
        """
        config = self.config
        if not config.adversarial:
            return None
        model_config = self.model.config
        if not (hasattr(self.model, "decoder") and hasattr(self.model, "codebook_size")):
            raise UsageError(f"adversarial training is for the tokenizers; {config.model} "
                             "brings its own likelihood")
        # A forked generator: turning the critic on changes neither the model's initial
        # weights nor the data order.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            try:
                critic = build_discriminator(config.adversarial, model_config.dims,
                                             model_config.channels, config.discriminator_options)
            except (KeyError, TypeError, ValueError) as exc:
                raise UsageError(f"adversarial {config.adversarial!r} does not fit "
                                 f"{config.model} ({model_config.modality}): {exc}") from None
        try:
            with torch.no_grad():
                critic(torch.zeros(1, model_config.channels, *config.crop))
        except RuntimeError:
            raise UsageError(f"crop {config.crop} is too small for the {config.adversarial} "
                             "discriminator; use a larger crop or fewer layers "
                             "(discriminator_options)") from None
        return Adversary(critic, loss=config.adversarial_loss, weight=config.adversarial_weight,
                         adaptive=config.adaptive_weight, adaptive_max=config.adaptive_weight_max,
                         feature_matching_weight=config.feature_matching_weight,
                         lecam_weight=config.lecam_weight,
                         lecam_decay=config.lecam_decay).to(self.device)

    def _build_optimization(self) -> None:
        config = self.config
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(config))
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        model_config = self.model.config
        sample_rate = model_config.sample_rate if model_config.modality == "audio" else None
        self.loss_fn = ReconstructionLoss(
            model_config.modality,
            sample_rate=sample_rate,
            l1=config.l1_weight,
            l2=config.l2_weight,
            stft=config.stft_weight,
            mel=config.mel_weight,
        ).to(self.device)
        self.sample_rate = sample_rate
        self.bf16 = config.precision == "bf16" or (
            config.precision == "auto" and self.device.type == "cuda"
        )
        # Buffers are not broadcast: codebook state is kept equal by the quantizers' own
        # all-reduce, and each rank's code-usage ring must hold its own codes.
        self.net = (DistributedDataParallel(self.model, broadcast_buffers=False)
                    if self.placement.world_size > 1 else self.model)
        self._build_adversarial_optimization()

    def _build_adversarial_optimization(self) -> None:
        """The critic's AdamW (constant lr) and DDP wrapper, and the loss balancer."""
        config, self.critic, self.critic_optimizer = self.config, None, None
        if self.adversary is not None:
            critic = self.adversary.discriminator
            self.critic_optimizer = torch.optim.AdamW(
                critic.parameters(), lr=config.discriminator_lr or config.lr,
                weight_decay=config.weight_decay,
                betas=(config.discriminator_beta1, config.discriminator_beta2))
            self.critic = (DistributedDataParallel(critic, broadcast_buffers=False)
                           if self.placement.world_size > 1 else critic)
        self.balancer = None
        if config.balancer:
            weights = {**self.loss_fn.weights, "adversarial": config.adversarial_weight,
                       "feature_matching": config.feature_matching_weight}
            self.balancer = LossBalancer(weights, config.balancer_decay).to(self.device)

    def _parts(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer | None]]:
        """Trained parts beside the model, saved and resumed with it."""
        parts: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] = {}
        if getattr(self, "adversary", None) is not None:
            parts["discriminator"] = (self.adversary, self.critic_optimizer)
        if getattr(self, "balancer", None) is not None:
            parts["balancer"] = (self.balancer, None)
        return parts

    @property
    def eval_model(self) -> nn.Module:
        """The weights validated and saved: the EMA when kept, else the trained ones."""
        return self.ema.model if self.ema is not None else self.model

    def run(self, callbacks: Sequence[StepCallback] = ()) -> TrainSummary:
        """Train to the last step, logging, validating and checkpointing on the way.

        Args:
            callbacks: Called after each step with (step, logged values).

        Returns:
            The run's summary, as ``train`` returns it.

        Raises:
            TrainingDiverged: On a non-finite loss.
            TrainingInterrupted: After Ctrl-C, once the checkpoint is written.
        """
        start = time.monotonic()
        if self.resume_from is not None:
            self.state = load_checkpoint(
                self.resume_from,
                self.model,
                self.optimizer,
                self.scheduler,
                self.ema,
                self.placement.rank,
                self.placement.world_size,
                self._parts(),
            )
        if self.rank0:  # only once the checkpoint loaded: a failed resume keeps the old one
            self.config.save(self.out / "config.toml")
        self.model.train()
        values: dict[str, float] = {}
        last_checkpoint = self.resume_from
        with (
            self._sigint_sets_stop(),
            self.logger.progress_bar(self.config.steps, self.state.step) as bar,
        ):
            for x, position in self._batches():
                values = self._step(x)
                self.state.step += 1
                self.state.positions = self._gather(position)
                step = self.state.step
                bar(step, values)
                if step % self.config.log_every == 0 or step == self.config.steps:
                    self.logger.log(step, "train", values)
                if self.val_shards and (
                    step % self.config.val_every == 0 or step == self.config.steps
                ):
                    self._validate()
                for callback in callbacks:
                    callback(step, values)
                stopping = self._stop_agreed()
                if (
                    step % self.config.checkpoint_every == 0
                    or step == self.config.steps
                    or stopping
                ):
                    last_checkpoint = self._save_checkpoint()
                if stopping:
                    raise TrainingInterrupted(f"interrupted at step {step}; checkpoint written to "
                                              f"{last_checkpoint}; continue with --resume")
                if step >= self.config.steps:
                    break
        return self._finish(values, last_checkpoint, time.monotonic() - start)

    def _batches(self) -> Iterator[tuple[torch.Tensor, DataPosition]]:
        if self.state.step >= self.config.steps:
            return iter(())
        config, rank = self.config, self.placement.rank

        def make_epoch(epoch: int) -> CropBatches:
            return CropBatches(
                self.train_shards,
                self.media,
                config.crop,
                config.batch_size,
                train=True,
                shuffle_buffer=config.shuffle_buffer,
                seed=config.seed,
                rank=rank,
                epoch=epoch,
                **self.inputs,
            )

        return training_batches(
            make_epoch, config.num_workers, self.state.positions[rank], self._skip
        )

    def _skip(self, error: SampleError) -> None:
        self.skipped.append(error)
        self.logger.sample_error(error)

    def _skip_once(self, error: SampleError) -> None:
        """Validation reads the same shards every time; report each bad sample once."""
        if (error.shard, error.key) not in {(e.shard, e.key) for e in self.skipped}:
            self._skip(error)

    def _autocast(self):
        return (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        )

    def _losses(self, module: nn.Module, x: torch.Tensor, c: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """Forward (with the condition c for conditional models).

        Gives x_hat, every weighted loss term and the model's stats.
        """
        with self._autocast():
            x_hat, model_losses, stats = module(x) if c is None else module(x, c)
        terms = {k: v for k, v in model_losses.items() if k != "reconstruction"}
        if "reconstruction" in model_losses:
            terms.update(self.loss_fn(x_hat, x))
        return x_hat, terms, stats

    def _step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, c = self._on_device(batch)
        if hasattr(self.model, "set_step"):
            self.model.set_step(self.state.step)
        x_hat, terms, stats = self._losses(self.net, x, c)
        adversarial = (self.adversary is not None
                       and self.state.step >= self.config.adversarial_start)
        if adversarial:
            more_terms, more_stats = self._generator_terms(x, x_hat, terms)
            terms.update(more_terms)
            stats = {**stats, **more_stats}
        loss = torch.stack(list(terms.values())).sum()
        self.optimizer.zero_grad(set_to_none=True)
        if self.balancer is not None:
            stats = {**stats, **self.balancer.backward(x_hat, terms)}
        else:
            loss.backward()
        clip = self.config.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if adversarial:  # on the same x_hat, before either player's weights change
            stats = {**stats, **self._critic_backward(x, x_hat.detach())}
        mean_loss = self._agree_on(loss.detach())
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(self._diverged_message(mean_loss))
        if adversarial and not math.isfinite(stats["disc_grad_norm"]):
            raise TrainingDiverged(self._diverged_message(stats["disc_grad_norm"], "the "
                                                          "discriminator's gradient norm"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if adversarial:
            self.critic_optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"loss": mean_loss, **{k: float(v.detach()) for k, v in terms.items()}, **stats,
                "grad_norm": float(grad_norm), "lr": lr}

    def _generator_terms(self, x: torch.Tensor, x_hat: torch.Tensor,
                         terms: dict[str, torch.Tensor],
                         ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The adversarial terms of the generator's loss, and values to log."""
        reconstruction, weight = None, None
        if self.adversary.adaptive and self.balancer is None:
            present = [terms[k] for k in RECONSTRUCTION_TERMS if k in terms]
            reconstruction = torch.stack(present).sum() if present else None
            weight = last_layer(self.model.decoder)
        return self.adversary.generator_terms(x, x_hat, reconstruction, weight, self._autocast)

    def _critic_backward(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
        """The critic's loss, backward and clipping; its optimizer steps once the step agrees."""
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss, stats = self.adversary.discriminator_loss(self.critic, x, x_hat, self._autocast)
        loss.backward()
        clip = self.config.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.adversary.discriminator.parameters(), clip)
        return {**stats, "disc_grad_norm": float(norm)}

    def _on_device(
        self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x, c) on the run's device; c is None unless the model is conditional."""
        # The DataLoader makes pairs lists.
        x, c = batch if isinstance(batch, (tuple, list)) else (batch, None)
        return x.to(self.device, non_blocking=True), None if c is None else c.to(self.device)

    def _agree_on(self, loss: torch.Tensor) -> float:
        """The loss averaged over ranks; also shares Ctrl-C, so that every rank stops together."""
        if self.placement.world_size == 1:
            return float(loss)
        packed = torch.stack(
            [loss.float(), torch.tensor(float(self.stop_requested), device=loss.device)]
        )
        dist.all_reduce(packed)
        self.agreed_stop = bool(packed[1] > 0)
        return float(packed[0]) / self.placement.world_size

    def _stop_agreed(self) -> bool:
        """Whether to stop after this step: under DDP, what all ranks agreed on during it."""
        return self.stop_requested if self.placement.world_size == 1 else self.agreed_stop

    def _diverged_message(self, loss: float, what: str = "loss") -> str:
        step = self.state.step + 1
        found = list_checkpoints(self.out)
        last = (
            f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
        )
        return f"{what} is {loss} at step {step}; stopped before applying it ({last})"

    def _gather(self, position: DataPosition) -> list[DataPosition]:
        if self.placement.world_size == 1:
            return [position]
        positions: list[Any] = [None] * self.placement.world_size
        dist.all_gather_object(positions, position)
        return positions

    def _save_checkpoint(self) -> Path:
        rngs: list[Any] = [rng_state()]
        if self.placement.world_size > 1:
            rngs = [None] * self.placement.world_size
            dist.all_gather_object(rngs, rng_state())
        path = self.out / "checkpoints"
        if self.rank0:
            path = save_checkpoint(self.out, self.state, self.model, self.optimizer, self.scheduler,
                                   self.ema, rngs, self.config.keep_last, self._parts())
        self._barrier()
        return path

    def _barrier(self) -> None:
        if self.placement.world_size > 1:
            dist.barrier()

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        results: dict[str, float] = {}
        if self.rank0:
            results = self._validate_here()
            self.logger.log(self.state.step, "val", results)
            self._keep_best(results)
        self._barrier()
        self.last_validation = results
        return results

    def _validate_here(self) -> dict[str, float]:
        module = self.eval_model
        was_training = module.training
        module.eval()
        codes_known = hasattr(module, "encode") and hasattr(module, "codebook_size")
        metrics = ValidationMetrics(module.codebook_size if codes_known else 0,
                                    module.num_levels if codes_known else 0, self.sample_rate)
        loss_total, batches = 0.0, 0
        dataset = CropBatches(
            self.val_shards,
            self.media,
            self.config.crop,
            self.config.batch_size,
            train=False,
            **self.inputs,
        )
        for item in epoch_loader(dataset, 0):
            if isinstance(item, SampleError):
                self._skip_once(item)
                continue
            x, c = self._on_device(item)
            x_hat, terms, _ = self._losses(module, x, c)
            metrics.update(x, x_hat, module.encode(x) if codes_known else None)
            loss_total += float(torch.stack(list(terms.values())).sum())
            if batches == 0:
                save_reconstruction_picture(
                    self.out / "pictures" / f"step-{self.state.step:08d}.png",
                    x,
                    x_hat,
                    self.model.config.modality,
                    self.sample_rate,
                )
            batches += 1
            if batches >= self.config.val_batches:
                break
        module.train(was_training)
        return {**metrics.compute(), "loss": loss_total / batches}

    def _keep_best(self, results: dict[str, float]) -> None:
        name = self.config.best_metric
        if name not in results:
            return
        value, best = results[name], self.state.best
        better = best is None or (value < best if BEST_METRICS[name] == "min" else value > best)
        if better:
            self.state.best = value
            vqtok.save(self.eval_model, self.out / "best")

    def _finish(
        self, values: dict[str, float], checkpoint: Path | None, seconds: float
    ) -> TrainSummary:
        mine = replica_hash(self.model)
        if self.adversary is not None:  # the critic's replicas must agree too
            mine += "-" + replica_hash(self.adversary)
        hashes = [mine]
        if self.placement.world_size > 1:
            hashes = [None] * self.placement.world_size
            dist.all_gather_object(hashes, mine)
        final = self.out / "final"
        if self.rank0:
            vqtok.save(self.eval_model, final)
        summary = TrainSummary(
            steps=self.state.step, loss=values.get("loss", float("nan")), seconds=round(seconds, 3),
            checkpoint=str(checkpoint), final_model=str(final),
            best_model=str(self.out / "best") if self.state.best is not None else None,
            best=self.state.best, validation=self.last_validation,
            samples_skipped=len(self.skipped), replica_hashes=hashes,
        )
        if self.rank0:
            (self.out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        return summary

    @contextmanager
    def _sigint_sets_stop(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, checkpoint, stop. A second one stops at once."""
        def handler(signum: int, frame: Any) -> None:
            self.stop_requested = True
            signal.signal(signal.SIGINT, signal.default_int_handler)

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def close(self) -> None:
        """Close the run log, free the run folder and leave the process group, if joined."""
        lock = getattr(self, "folder_lock", None)
        if lock is not None:
            lock.release()
        if hasattr(self, "logger"):
            self.logger.close()
        if self.placement.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
