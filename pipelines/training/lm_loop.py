"""Token-LM training: ``train_lm(config, open_tokens)`` or ``vqtok lm train TOKENS``.

The same machinery as the tokenizer trainer (``training.loop``): AdamW, warm-up + cosine
schedule, gradient clipping, Ctrl-C finishing the step and writing a checkpoint, exact
resume (``training.checkpointing``: weights, optimizer, scheduler, data position),
``metrics.jsonl`` and a progress bar (``training.runlog``), DDP under torchrun. Batches
depend on (seed, epoch, batch) only, so a killed and resumed run ends with the weights of
an uninterrupted one.

The run writes ``OUT/config.toml``, ``metrics.jsonl``, ``checkpoints/``, ``final/`` and,
with validation tokens, ``best/`` (LM checkpoints, ``vqtok.lm.load_lm``) and
``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from vqtok.lm import TokenLM, create_lm, list_lms, save_lm
from vqtok.lm.presets import PRESETS as LM_PRESETS
from vqtok.lm.sequences import IGNORE, lm_loss
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.training.checkpointing import (
    RunState,
    list_checkpoints,
    load_checkpoint,
)
from vqtok.pipelines.training.data import DataPosition
from vqtok.pipelines.training.lm_config import LMTrainConfig
from vqtok.pipelines.training.lm_data import (
    Pieces,
    TokenSource,
    check_export,
    lm_batches,
    read_labels,
    resolve_layout,
)
from vqtok.pipelines.training.loop import (
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    _init_distributed,
    _resolve_device,
    replica_hash,
    warmup_cosine,
)
from vqtok.pipelines.training.runlog import RunLogger

OpenTokens = Callable[[str], TokenSource]
StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class LMTrainSummary:
    """What a finished LM run produced; also written to ``OUT/summary.json``."""

    steps: int
    loss: float
    seconds: float
    tokens_per_second: float
    final_model: str
    lm_id: str
    best_model: str | None = None
    best_bits_per_token: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    replica_hashes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return dict(self.__dict__)


def train_lm(config: LMTrainConfig, open_tokens: OpenTokens, *, resume: bool = False,
             progress: bool = True, callbacks: Sequence[StepCallback] = ()) -> LMTrainSummary:
    """Train an LM on exported tokens to ``config.steps`` (or continue with ``resume``).

    Args:
        config: The run.
        open_tokens: Opens an export prefix (``TokenDataset`` with any ``seq_len``).
        resume: Continue from the latest checkpoint in ``config.out``.
        progress: Show a progress bar (rank 0).
        callbacks: Called after each step with (step, logged values).

    Returns:
        The run's summary.

    Raises:
        UsageError: For a bad config, tokens or labels, before any step.
        TrainingDiverged: On a non-finite loss.
        TrainingInterrupted: After Ctrl-C, once the checkpoint is written.
    """
    trainer = LMTrainer(config, open_tokens, resume=resume, progress=progress)
    try:
        return trainer.run(callbacks)
    finally:
        trainer.close()


def _open(open_tokens: OpenTokens, prefix: str, what: str) -> TokenSource:
    if not prefix:
        raise UsageError(f"no {what} tokens given")
    try:
        source = open_tokens(prefix)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"cannot read the {what} tokens {prefix}: {error}") from None
    check_export(source, what)
    return source


def build_lm(config: LMTrainConfig, source: TokenSource, labels: list[int] | None) -> TokenLM:
    """A fresh LM of ``config.model`` for the tokens of ``source``.

    Raises:
        UsageError: Unknown preset or model_options that do not fit it.
    """
    if config.model not in list_lms():
        raise UsageError(f"unknown LM {config.model!r}; known: {', '.join(list_lms())}")
    manifest = source.manifest
    classes = config.num_classes or (max(labels) + 1 if labels else 0)
    # Audio and video samples are whole signals of any length (issue 18): time counts per
    # chunk, so the same LM codes a 2-second window and an hour.
    options = {"relative_time": manifest.modality in ("audio", "video"),
               **config.model_options}
    max_len = options.get("max_len", LM_PRESETS[config.model].max_len)
    layout = resolve_layout(source, config.layout, options["relative_time"], max_len)
    try:
        return create_lm(
            config.model, codebook_size=manifest.codebook_size, num_levels=manifest.num_levels,
            layout=layout, num_classes=classes, tokenizer_id=manifest.model_id,
            modality=manifest.modality, **options,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"model_options do not fit {config.model}: {error}") from None


class LMTrainer(Trainer):
    """Holds an LM run; construction does every check that can fail on bad input.

    Borrows the tokenizer Trainer's checkpoint, Ctrl-C, DDP-agreement and logging methods;
    data, step and validation are the LM's own.
    """

    def __init__(self, config: LMTrainConfig, open_tokens: OpenTokens, *, resume: bool = False,
                 progress: bool = True) -> None:
        config.check()
        self.config, self.out = config, Path(config.out)
        self.device = _resolve_device(config.device)
        self.placement = _init_distributed(self.device)
        self.rank0 = self.placement.rank == 0
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        source = _open(open_tokens, config.train, "training")
        keys = list(source.manifest.keys)
        labels = read_labels(config.labels, keys, "training") if config.labels else None
        self.model = build_lm(config, source, labels).to(self.device)
        self.pieces = Pieces.build(source, self.model.config, labels, "training")
        if self.model.output_bias is not None:  # a resumed run loads its own over this
            self.model.init_output_bias(self.pieces.level_counts(self.model.config))
        self.val_pieces = self._validation_pieces(open_tokens, source)
        self.resume_from = self._checkpoint_to_resume(resume)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay,
                                           betas=(config.beta1, config.beta2))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(config))
        self.ema = None
        self.net = (DistributedDataParallel(self.model) if self.placement.world_size > 1
                    else self.model)
        self.logger = RunLogger(self.out, enabled=self.rank0, progress=progress,
                                tensorboard=config.tensorboard)
        self.state = RunState(positions=[DataPosition()] * self.placement.world_size)
        self.skipped, self.stop_requested, self.agreed_stop = [], False, False
        self.last_validation: dict[str, float] = {}
        self.tokens_seen = 0

    def _validation_pieces(self, open_tokens: OpenTokens, train: TokenSource) -> Pieces | None:
        if not self.config.val:
            return None
        source = _open(open_tokens, self.config.val, "validation")
        if source.manifest.model_id != train.manifest.model_id:
            raise UsageError("the validation tokens come from another tokenizer "
                             f"({source.manifest.model_id}, not {train.manifest.model_id})")
        keys = list(source.manifest.keys)
        spec = self.config.val_labels or self.config.labels
        labels = read_labels(spec, keys, "validation") if self.model.config.num_classes else None
        return Pieces.build(source, self.model.config, labels, "validation")

    def run(self, callbacks: Sequence[StepCallback] = ()) -> LMTrainSummary:
        """Train to the last step, logging, validating and checkpointing on the way."""
        start = time.monotonic()
        if self.resume_from is not None:
            self.state = load_checkpoint(self.resume_from, self.model, self.optimizer,
                                         self.scheduler, None, self.placement.rank,
                                         self.placement.world_size)
        if self.rank0:  # only once the checkpoint loaded: a failed resume keeps the old one
            self.config.save(self.out / "config.toml")
        self.model.train()
        values: dict[str, float] = {}
        with (self._sigint_sets_stop(),
              self.logger.progress_bar(self.config.steps, self.state.step) as bar):
            for batch, position in self._lm_batches():
                values = self._lm_step(batch)
                self.state.step += 1
                self.state.positions = self._gather(position)
                self._after_step(self.state.step, values, bar, callbacks)
                if self.state.step >= self.config.steps:
                    break
        return self._lm_finish(values, time.monotonic() - start)

    def _after_step(self, step: int, values: dict[str, float], bar, callbacks) -> None:
        bar(step, values)
        last = step == self.config.steps
        if step % self.config.log_every == 0 or last:
            self.logger.log(step, "train", values)
        if self.val_pieces is not None and (step % self.config.val_every == 0 or last):
            self._validate()
        for callback in callbacks:
            callback(step, values)
        stopping = self._stop_agreed()
        if step % self.config.checkpoint_every == 0 or last or stopping:
            written = self._save_checkpoint()
        if stopping:
            raise TrainingInterrupted(f"interrupted at step {step}; checkpoint written to "
                                      f"{written}; continue with --resume")

    def _lm_batches(self):
        if self.state.step >= self.config.steps:
            return iter(())
        rank = self.placement.rank
        return lm_batches(self.pieces, self.model.config, self.config.batch_size,
                          self.config.seed, rank, self.placement.world_size,
                          self.state.positions[rank])

    def _lm_step(self, batch) -> dict[str, float]:
        inputs, targets, positions = (t.to(self.device) for t in batch)
        loss = lm_loss(self.net, inputs, targets, positions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              self.config.grad_clip or float("inf"))
        mean = self._agree_on(loss.detach())
        if not math.isfinite(mean):
            raise TrainingDiverged(self._diverged_message(mean))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.tokens_seen += int((targets != IGNORE).sum()) * self.placement.world_size
        return {"loss": mean, "bits_per_token": mean / math.log(2), "grad_norm": float(norm),
                "lr": lr}

    def _validate_here(self) -> dict[str, float]:
        results = evaluate_pieces(self.model, self.val_pieces, self.config.batch_size,
                                  self.config.val_batches, self.device)
        return results

    def _keep_best(self, results: dict[str, float]) -> None:
        value, best = results["bits_per_token"], self.state.best
        if best is None or value < best:
            self.state.best = value
            save_lm(self.model, self.out / "best")

    def _lm_finish(self, values: dict[str, float], seconds: float) -> LMTrainSummary:
        hashes = [replica_hash(self.model)]
        if self.placement.world_size > 1:
            hashes = [None] * self.placement.world_size
            dist.all_gather_object(hashes, replica_hash(self.model))
        final = self.out / "final"
        if self.rank0:
            save_lm(self.model, final)
        found = list_checkpoints(self.out)
        summary = LMTrainSummary(
            steps=self.state.step, loss=values.get("loss", float("nan")),
            seconds=round(seconds, 3),
            tokens_per_second=round(self.tokens_seen / max(seconds, 1e-9), 1),
            final_model=str(final), lm_id=self.model.lm_id,
            best_model=str(self.out / "best") if self.state.best is not None else None,
            best_bits_per_token=self.state.best, validation=self.last_validation,
            replica_hashes=hashes,
        )
        if self.rank0:
            record = {**summary.to_dict(), "checkpoint": str(found[-1]) if found else None}
            (self.out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
        return summary


@torch.no_grad()
def evaluate_pieces(model: TokenLM, pieces: Pieces, batch_size: int, max_batches: int,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Cross-entropy of the LM on pieces: every chunk once, with its true class.

    Args:
        model: The LM.
        pieces: The held-out pieces.
        batch_size: Sequences per forward.
        max_batches: Stop after this many batches (0: all).
        device: Where the LM runs.

    Returns:
        ``bits_per_token`` (code targets only), ``bits_per_piece``, ``loss`` (nats per
        target, EOS included) and ``tokens``.
    """
    was_training = model.training
    model.eval()
    codes_nats, all_nats, codes, targets_seen = 0.0, 0.0, 0, 0
    k = model.config.codebook_size
    for index, batch in enumerate(pieces.evaluation_batches(model.config, batch_size)):
        if max_batches and index >= max_batches:
            break
        inputs, targets, positions = (t.to(device) for t in batch)
        logits = model(inputs, positions).float()
        nats = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                               reduction="none")
        is_code = (targets >= 0) & (targets < k)
        codes_nats += float(nats[is_code].sum())
        all_nats += float(nats.sum())
        codes += int(is_code.sum())
        targets_seen += int((targets != IGNORE).sum())
    model.train(was_training)
    per_token = codes_nats / max(codes, 1) / math.log(2)
    return {"bits_per_token": per_token,
            "bits_per_piece": per_token * pieces.num_tokens / max(len(pieces), 1),
            "loss": all_nats / max(targets_seen, 1), "tokens": float(codes)}
