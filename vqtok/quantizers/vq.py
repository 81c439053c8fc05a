"""Vector quantization (van den Oord et al. 2017) with the codebook-health tools of later work.

Forward: nearest code through ``vqtok.kernels.nearest_code``, straight-through gradient,
commitment loss beta * ||z_e - sg[e]||^2 and, when codes learn by gradient, the codebook
loss ||sg[z_e] - e||^2. By default the codebook learns by EMA instead (decay 0.99).
Health: k-means init on the first training batch, dead-code restart, cosine codes and a
factorized low-dimensional lookup. All state changes happen in training forwards only.
Optionally the gradient reaches the encoder through the rotation trick (Fifty et al. 2024)
instead of the straight-through copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.kernels import nearest_code
from vqtok.quantizers.base import Quantizer, RowOutput, straight_through
from vqtok.quantizers.distributed import all_reduce_sum, broadcast_from_rank0, is_rank0
from vqtok.quantizers.ema import ema_codebook_step
from vqtok.quantizers.kmeans import kmeans
from vqtok.quantizers.restart import draw_replacements, restart_codes
from vqtok.quantizers.rotation import rotate_through
from vqtok.quantizers.usage import CodeUsage, usage_stats
from vqtok.registry import register_quantizer

METRICS = ("l2", "cosine")


@dataclass
class VQConfig:
    """Options of :class:`VectorQuantizer`.

    dim: channels D of the encoder output. codebook_size: K codes.
    codebook_dim: look codes up in this smaller dimension (linear projections in and out);
        None looks them up in ``dim``.
    metric: "l2", or "cosine" for l2-normalized codes and latents.
    beta: commitment weight. ema: learn codes by EMA (else by gradient, with a codebook loss).
    decay, eps: EMA decay g and Laplace smoothing.
    kmeans_init, kmeans_iters: initialize the codebook by k-means on the first training batch.
    dead_code_threshold: re-seed codes used fewer times than this over the usage window
        (0 turns restarts off). usage_window: tokens per rank in the usage histogram.
    center: subtract a running mean of the latents before the lookup, with the gradient of
        the batch mean, plus an anchoring loss (see ``VectorQuantizer._centered``). The
        encoder's early steps shift every latent alike; centred, such a shift no longer
        moves all latents into the same few codes. center_decay: EMA decay of the mean.
    rotation_trick: pass the gradient to the encoder through the rotation and rescaling that
        maps the latent onto its code (Fifty et al. 2024, see ``vqtok.quantizers.rotation``)
        instead of copying it; forward values are unchanged.
    backend: kernel backend for ``vqtok.kernels`` ("auto", "torch" or "triton").
    """

    dim: int
    codebook_size: int = 1024
    codebook_dim: int | None = None
    metric: str = "l2"
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 5
    dead_code_threshold: float = 1.0
    usage_window: int = 65536
    center: bool = False
    center_decay: float = 0.99
    rotation_trick: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.codebook_size < 1:
            raise ValueError(
                f"dim and codebook_size must be positive; got {self.dim}, {self.codebook_size}"
            )
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be positive or None, got {self.codebook_dim}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        if not 0.0 <= self.center_decay < 1.0:
            raise ValueError(f"center_decay must be in [0, 1), got {self.center_decay}")
        if self.beta < 0 or self.dead_code_threshold < 0 or self.kmeans_iters < 0:
            raise ValueError("beta, dead_code_threshold and kmeans_iters must be >= 0")

    @property
    def lookup_dim(self) -> int:
        """The dimension codes live in."""
        return self.codebook_dim or self.dim


class VectorQuantizer(Quantizer):
    """Single-codebook VQ layer. Codes: int64 (B, *spatial).

    State (all in ``state_dict``): ``codebook`` (K, C) fp32 (a buffer under EMA, a parameter
    otherwise), ``cluster_size`` (K,) and ``embed_sum`` (K, C) fp32 under EMA, and the
    ``initialized`` flag; C = ``config.lookup_dim``. With ``center``, also ``latent_mean`` (C,)
    fp32, the running mean of the latents in the lookup space.

    Why centring: with a narrow encoder output (speech, where most positions are near
    silence) the latents start in a narrow cone, around which k-means places the codes. The
    first optimizer steps move every latent by about the same vector, out of the codes'
    region and onto the few codes at its edge; the decoder then sees one input everywhere,
    the encoder loses every reason to keep latents apart, and the codebook collapses within
    a few steps (measured on the demo's speech: 1 code per batch after 6 steps, even at a
    learning rate of 1e-4). Subtracting the mean cancels such common shifts.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__(
            config, codebook_size=config.codebook_size, num_levels=1, lookup_dim=config.lookup_dim
        )
        k, c = config.codebook_size, config.lookup_dim
        codebook = self._normalized(torch.randn(k, c))
        if config.ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(k))
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(False))
        if config.center:
            # Only when centring, so that the state dicts of other configs are unchanged.
            self.register_buffer("latent_mean", torch.zeros(c))
        self.usage_window = CodeUsage(k, config.usage_window)
        self.restarted_total = 0  # transient, like the usage window

    def quantize_rows(self, x: Tensor, batch_size: int) -> RowOutput:
        del batch_size  # every row is quantized alike
        learning = self.learning()
        centered, anchoring = self._centered(self.project_in(x), learning)
        z = self._normalized(centered)
        if learning and not bool(self.initialized):
            self._initialize(z.detach())
        codebook = self._normalized(self.codebook)
        indices, _ = nearest_code(
            z.detach(), codebook.detach(), metric=self.config.metric, backend=self.config.backend
        )
        e = F.embedding(indices, codebook)
        losses = {"commitment": self.config.beta * F.mse_loss(z, e.detach())}
        if not self.config.ema:
            losses["codebook"] = F.mse_loss(z.detach(), e)
        if anchoring is not None:
            losses["centering"] = anchoring
        if learning and self.config.ema:
            self._ema_step(z.detach(), indices)
        stats = self.usage_window.step_stats(
            indices, record=learning, dead_below=self.config.dead_code_threshold
        )
        if learning:
            restarted = self._restart_dead_codes(z.detach())
            self.restarted_total += restarted
            # The step's count is 0 on all but one step in a window, so logs that sample
            # every n-th step miss it; the running total since this process started shows it.
            stats["restarted_codes"] = float(restarted)
            stats["restarted_total"] = float(self.restarted_total)
        through = rotate_through if self.config.rotation_trick else straight_through
        return RowOutput(self.project_out(through(z, e)), indices, losses, stats)

    @torch.no_grad()
    def encode_rows(self, x: Tensor) -> Tensor:
        z = self._normalized(self._centered(self.project_in(x), learning=False)[0])
        indices, _ = nearest_code(
            z,
            self._normalized(self.codebook),
            metric=self.config.metric,
            backend=self.config.backend,
        )
        return indices

    def decode_rows(self, codes: Tensor) -> Tensor:
        return self.project_out(F.embedding(codes, self._normalized(self.codebook)))

    def usage(self) -> dict[str, float]:
        return usage_stats(self.usage_window.histogram, self.config.dead_code_threshold)

    def _normalized(self, v: Tensor) -> Tensor:
        return F.normalize(v, dim=-1) if self.config.metric == "cosine" else v

    def _centered(self, z: Tensor, learning: bool) -> tuple[Tensor, Tensor | None]:
        """z (N, C) minus the running mean of the latents, and the anchoring loss (None at
        inference); z itself and no loss unless ``center``.

        A training forward first moves the running mean towards this batch's mean (taken
        over all ranks, so that every rank keeps the same buffer). Its value is what both
        training and inference subtract, so codes mean the same in both; its gradient is
        the batch mean's, as in batch normalization, so that the encoder is never pushed to
        shift all latents alike. Since nothing downstream depends on the mean any more, it
        could wander off faster than the running mean follows, and it would matter: with
        cosine codes what counts is the error of the mean relative to the latents' spread
        (which, unconstrained too, shrank to a tenth on the demo's speech). The anchoring
        loss ||batch mean - sg[running mean]||^2 / sg[mean squared spread] holds that ratio
        down.
        """
        if not self.config.center:
            return z, None
        if not learning:
            return z - self.latent_mean, None
        mean = z.mean(dim=0)
        with torch.no_grad():
            rows = torch.tensor(float(z.shape[0]), device=z.device)
            total = z.detach().sum(dim=0)
            all_reduce_sum(total, rows)
            if not bool(self.initialized):
                self.latent_mean.copy_(total / rows)  # the first batch sets the mean
            anchor = self.latent_mean.clone()
            self.latent_mean.lerp_(total / rows, 1.0 - self.config.center_decay)
            spread = (z - mean).pow(2).sum(dim=1).mean().clamp_min(torch.finfo(z.dtype).tiny)
        anchoring = (mean - anchor).pow(2).sum() / spread
        return z - (self.latent_mean + (mean - mean.detach())), anchoring

    @torch.no_grad()
    def _initialize(self, z: Tensor) -> None:
        """First training batch: k-means (or the random init) on rank 0, broadcast to all."""
        k = self.codebook_size
        centroids = self.codebook.detach().clone()
        sizes = torch.ones(k, device=z.device)
        if self.config.kmeans_init and is_rank0():
            centroids, sizes = kmeans(z, k, self.config.kmeans_iters, metric=self.config.metric)
        broadcast_from_rank0(centroids)
        broadcast_from_rank0(sizes)
        self.codebook.copy_(centroids)
        if self.config.ema:
            # An empty cluster keeps weight 1 so that e = m / N stays its centroid.
            self.cluster_size.copy_(sizes.clamp_min(1.0))
            self.embed_sum.copy_(centroids * self.cluster_size[:, None])
        self.initialized.fill_(True)

    def _ema_step(self, z: Tensor, indices: Tensor) -> None:
        new = ema_codebook_step(
            self.cluster_size,
            self.embed_sum,
            z,
            indices,
            decay=self.config.decay,
            eps=self.config.eps,
            backend=self.config.backend,
        )
        self.codebook.copy_(new)

    def _restart_dead_codes(self, recent: Tensor) -> int:
        """Re-seed codes under the usage threshold from ``recent`` (N, C); returns how many.

        Judged only on a full window, which is then cleared so that a revived code gets a
        whole window to prove itself. Every rank sees the same global histogram, so all
        ranks agree on the dead set and take the replacements from rank 0.
        """
        threshold = self.config.dead_code_threshold
        if threshold <= 0 or not self.usage_window.window_full():
            return 0
        dead = self.usage_window.histogram < threshold
        count = int(dead.sum())
        if count == 0:
            return 0
        ema_state = (self.cluster_size, self.embed_sum) if self.config.ema else (None, None)
        restart_codes(dead, draw_replacements(recent, count), self.codebook.data, *ema_state)
        self.usage_window.clear()
        return count


@register_quantizer("vq")
def build_vq(**options) -> VectorQuantizer:
    """``QUANTIZERS.create("vq", dim=..., codebook_size=..., **options)``.

    Options: :class:`VQConfig`.
    """
    return VectorQuantizer(VQConfig(**options))
