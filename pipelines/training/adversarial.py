"""Adversarial training: GAN losses, feature matching, VQGAN's adaptive weight, LeCam, a balancer.

The trainer's generator is the tokenizer; the critics are ``vqtok.models.discriminators``.
Each step the generator minimises its reconstruction terms plus

    adversarial = adversarial_weight * lambda * g_loss(D(x_hat))
    feature_matching = feature_matching_weight * mean_l |D_l(x_hat) - D_l(x)|

where lambda is VQGAN's adaptive weight (or 1), and the discriminator, in its own AdamW
step on the same batch, minimises d_loss(D(x), D(x_hat)) plus an optional LeCam penalty.
Losses with several sub-discriminators (multi-scale STFT, multi-period) average over them,
so that a weight means the same whatever the number of critics. Every loss is computed in
fp32 from the logits, outside autocast, like the reconstruction terms.

`LossBalancer` is EnCodec's alternative to fixed weights: each term's gradient with respect
to the decoder output is rescaled so that its share of the total gradient is its weight's
share of the weights, whatever the terms' raw scales.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.models.discriminators import DiscriminatorSet

GAN_LOSSES = ("hinge", "lsgan")
# Terms that depend on the decoder output alone: the ones the balancer rescales.
BALANCED_TERMS = ("l1", "l2", "stft", "mel", "adversarial", "feature_matching")
RECONSTRUCTION_TERMS = ("l1", "l2", "stft", "mel")
ADAPTIVE_EPS = 1e-4  # VQGAN's: keeps lambda finite when the adversarial gradient vanishes


def generator_loss(fake: Sequence[Tensor], kind: str = "hinge") -> Tensor:
    """The generator's adversarial loss, averaged over sub-discriminators.

    Args:
        fake: Logits of reconstructions, one (B, 1, *positions) tensor per critic.
        kind: "hinge" (-mean D) or "lsgan" (mean (1 - D)^2).

    Returns:
        A scalar fp32 tensor.
    """
    if kind == "hinge":
        values = [-f.float().mean() for f in fake]
    else:
        values = [(1.0 - f.float()).square().mean() for f in fake]
    return torch.stack(values).mean()


def discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor],
                       kind: str = "hinge") -> Tensor:
    """The critic's loss, averaged over the real and fake halves and over sub-discriminators.

    Args:
        real: Logits of originals, one tensor per critic.
        fake: Logits of reconstructions (detached from the generator), same layout.
        kind: "hinge": (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2; "lsgan":
            (mean (1 - D(x))^2 + mean D(x_hat)^2) / 2.

    Returns:
        A scalar fp32 tensor.
    """
    values = []
    for r, f in zip(real, fake, strict=True):
        r, f = r.float(), f.float()
        if kind == "hinge":
            values.append(0.5 * (F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()))
        else:
            values.append(0.5 * ((1.0 - r).square().mean() + f.square().mean()))
    return torch.stack(values).mean()


def feature_matching(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """L1 between the critics' hidden features of originals and reconstructions.

    Args:
        real: Per critic, its layers' features of the originals (gradients are not kept).
        fake: The same for the reconstructions.

    Returns:
        The mean over critics and layers of mean |fake - real|, a scalar fp32 tensor.
    """
    values = [F.l1_loss(f.float(), r.detach().float())
              for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs, strict=True)]
    return torch.stack(values).mean()


def lecam_penalty(real: Sequence[Tensor], fake: Sequence[Tensor], ema_real: Tensor,
                  ema_fake: Tensor) -> Tensor:
    """LeCam regularization (Tseng et al., 2021), in the hinge-friendly form of its authors' code.

    Keeps the critic's outputs near the moving averages of the other side's outputs, which
    bounds how far apart real and fake scores drift when data are few.

    Args:
        real: Logits of originals, one tensor per critic.
        fake: Logits of reconstructions, same layout.
        ema_real: (critics,) fp32 moving averages of the mean real logit.
        ema_fake: (critics,) fp32 moving averages of the mean fake logit.

    Returns:
        mean over critics of mean relu(D(x) - ema_fake)^2 + mean relu(ema_real - D(x_hat))^2.
    """
    values = [F.relu(r.float() - ef).square().mean() + F.relu(er - f.float()).square().mean()
              for r, f, er, ef in zip(real, fake, ema_real, ema_fake, strict=True)]
    return torch.stack(values).mean()


def adaptive_weight(reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor,
                    max_weight: float = 1e4) -> Tensor:
    """VQGAN's adaptive weight: |grad rec| / (|grad adv| + 1e-4) at the decoder's last layer.

    Scaling the adversarial loss by it gives both terms gradients of the same size where
    they first meet the generator, so that one weight works across data and model sizes.

    Args:
        reconstruction: The summed reconstruction terms, a scalar with a graph.
        adversarial: The unweighted generator loss, a scalar with a graph.
        last_layer: The decoder's last weight tensor.
        max_weight: The upper clamp.

    Returns:
        A detached scalar fp32 tensor in [0, max_weight].
    """
    rec_grad, = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)
    adv_grad, = torch.autograd.grad(adversarial, last_layer, retain_graph=True)
    ratio = rec_grad.float().norm() / (adv_grad.float().norm() + ADAPTIVE_EPS)
    return ratio.clamp(0.0, max_weight).detach()


def last_layer(decoder: nn.Module) -> Tensor:
    """The decoder's last weight tensor (the last parameter of two or more dimensions).

    Args:
        decoder: A decoder module.

    Returns:
        The parameter.

    Raises:
        ValueError: The decoder has no such parameter.
    """
    weights = [p for p in decoder.parameters() if p.dim() >= 2]
    if not weights:
        raise ValueError("the decoder has no weight tensor to take the adaptive weight at")
    return weights[-1]


def _mean_over_ranks(value: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off gradients for a module's parameters (the critic during the generator's pass).

    Args:
        module: The module; its parameters' flags are restored on exit.

    Yields:
        Nothing; the body runs with the parameters frozen.
    """
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _halves(tensors: Sequence[Tensor], batch: int) -> tuple[list[Tensor], list[Tensor]]:
    return [t[:batch] for t in tensors], [t[batch:] for t in tensors]


class Adversary(nn.Module):
    """A discriminator and the state its losses keep (the LeCam moving averages).

    The state dict holds the critic's weights and the averages; the trainer saves it in
    each checkpoint and wraps ``discriminator`` in DDP under torchrun.

    Args:
        discriminator: The critics, as `vqtok.models.discriminators.build_discriminator`
            returns them.
        loss: "hinge" or "lsgan".
        weight: adversarial_weight, the generator loss's weight.
        adaptive: Scale the generator loss by VQGAN's adaptive weight.
        adaptive_max: The adaptive weight's upper clamp.
        feature_matching_weight: Weight of the feature-matching term (0 skips it).
        lecam_weight: Weight of the LeCam penalty in the critic's loss (0 skips it).
        lecam_decay: Decay of the LeCam moving averages.

    Raises:
        ValueError: ``loss`` is not one of GAN_LOSSES.
    """

    def __init__(self, discriminator: DiscriminatorSet, *, loss: str = "hinge",
                 weight: float = 0.5, adaptive: bool = True, adaptive_max: float = 1e4,
                 feature_matching_weight: float = 0.0, lecam_weight: float = 0.0,
                 lecam_decay: float = 0.99) -> None:
        super().__init__()
        if loss not in GAN_LOSSES:
            raise ValueError(f"adversarial loss must be one of {GAN_LOSSES}, got {loss!r}")
        self.discriminator = discriminator
        self.loss, self.weight, self.adaptive, self.adaptive_max = loss, weight, adaptive, \
            adaptive_max
        self.fm_weight, self.lecam_weight, self.lecam_decay = (
            feature_matching_weight, lecam_weight, lecam_decay)
        heads = discriminator.heads()
        self.register_buffer("ema_real", torch.zeros(heads))
        self.register_buffer("ema_fake", torch.zeros(heads))

    def generator_terms(self, x: Tensor, x_hat: Tensor, reconstruction: Tensor | None,
                        decoder_weight: Tensor | None,
                        autocast: Callable[[], AbstractContextManager]) -> tuple[
                            dict[str, Tensor], dict[str, float]]:
        """The generator's adversarial terms; the critic's parameters get no gradient.

        Args:
            x: (B, C, *spatial) originals.
            x_hat: Reconstructions, same shape, with the generator's graph.
            reconstruction: The summed reconstruction terms (for the adaptive weight; None
                when it is off).
            decoder_weight: The decoder's last weight (for the adaptive weight).
            autocast: Gives the trainer's autocast context for the critic's forward.

        Returns:
            Weighted scalar fp32 terms {"adversarial", "feature_matching" if weighted} to add
            to the loss, and values to log ("adaptive_weight").
        """
        critic = self.discriminator
        with frozen(critic):
            with autocast():
                fake_logits, fake_features = critic(x_hat)
            g_loss = generator_loss(fake_logits, self.loss)
            stats: dict[str, float] = {}
            scale = torch.ones((), device=g_loss.device)
            if self.adaptive and reconstruction is not None and decoder_weight is not None:
                scale = adaptive_weight(reconstruction, g_loss, decoder_weight, self.adaptive_max)
                stats["adaptive_weight"] = float(scale)
            terms = {"adversarial": self.weight * scale * g_loss}
            if self.fm_weight:
                with torch.no_grad(), autocast():
                    _, real_features = critic(x)
                terms["feature_matching"] = self.fm_weight * feature_matching(real_features,
                                                                              fake_features)
        return terms, stats

    def discriminator_loss(self, critic: nn.Module, x: Tensor, x_hat: Tensor,
                           autocast: Callable[[], AbstractContextManager]) -> tuple[
                               Tensor, dict[str, float]]:
        """The critic's loss on one batch; updates the LeCam averages.

        Args:
            critic: ``self.discriminator`` or its DDP wrapper.
            x: (B, C, *spatial) originals.
            x_hat: Reconstructions, same shape, detached from the generator.
            autocast: Gives the trainer's autocast context for the critic's forward.

        Returns:
            The scalar fp32 loss (LeCam included) and values to log: "disc_loss",
            "disc_real", "disc_fake" (mean logits) and "lecam" (when weighted).
        """
        batch = x.shape[0]
        with autocast():  # one forward over both halves: one DDP reduction per step
            logits, _ = critic(torch.cat([x, x_hat.to(x.dtype)]))
        real, fake = _halves(logits, batch)
        loss = discriminator_loss(real, fake, self.loss)
        real_means = torch.stack([r.float().mean() for r in real]).detach()
        fake_means = torch.stack([f.float().mean() for f in fake]).detach()
        stats = {"disc_loss": float(loss.detach()), "disc_real": float(real_means.mean()),
                 "disc_fake": float(fake_means.mean())}
        if self.lecam_weight:
            # Averaged over ranks, so that every replica (and a checkpoint) holds the same.
            means = _mean_over_ranks(torch.stack([real_means, fake_means]))
            self.ema_real.mul_(self.lecam_decay).add_((1 - self.lecam_decay) * means[0])
            self.ema_fake.mul_(self.lecam_decay).add_((1 - self.lecam_decay) * means[1])
            penalty = lecam_penalty(real, fake, self.ema_real, self.ema_fake)
            stats["lecam"] = float(penalty.detach())
            loss = loss + self.lecam_weight * penalty
        return loss, stats


class LossBalancer(nn.Module):
    """EnCodec's loss balancer: each term's gradient at the decoder output, rescaled.

    For the terms present, with g_i = d term_i / d x_hat and n_i a bias-corrected moving
    average of its per-sample norm, the gradient that enters the decoder is

        sum_i (w_i / sum_j w_j) * total_norm * g_i / n_i

    so that each term's share of the gradient is its weight's share, whatever its raw
    scale (a spectral loss next to an adversarial one differs by orders of magnitude, and
    by different ones as training goes). Terms outside ``BALANCED_TERMS`` (the quantizer's
    commitment loss) keep their plain gradient.

    The weights are shares of the gradient, not loss scales: with the trainer's default
    weights (l2 = stft = mel = 1) the waveform L2 gets a third of it, and since a young
    decoder cannot predict phase, the L2-optimal output is silence. That is what speech
    runs with ``balancer=true`` gave (mel distance 10); with ``l2_weight=0.02`` the same
    run trained like the plain one (BENCHMARKS.md, audio recipe). Give waveform terms a
    small share, as EnCodec does (0.1 against 1 for the spectral term).

    Args:
        weights: Each balanced term's weight (terms with weight 0 are never present).
        decay: Decay of the norms' moving averages (EnCodec: 0.999).
        total_norm: The norm the combined gradient aims for, per sample.
    """

    def __init__(self, weights: Mapping[str, float], decay: float = 0.999,
                 total_norm: float = 1.0) -> None:
        super().__init__()
        self.weights = {name: float(weights.get(name, 0.0)) for name in BALANCED_TERMS}
        self.decay, self.total_norm = decay, total_norm
        # Row i: (decayed sum of norms, decayed count) of BALANCED_TERMS[i].
        self.register_buffer("norms", torch.zeros(len(BALANCED_TERMS), 2, dtype=torch.float64))

    def backward(self, output: Tensor, terms: Mapping[str, Tensor]) -> dict[str, float]:
        """Backpropagate the terms: balanced ones through ``output``, the rest plainly.

        Args:
            output: x_hat, (B, C, *spatial), the decoder output every balanced term reads.
            terms: Weighted scalar loss terms (the trainer's loss is their sum).

        Returns:
            Per balanced term, its moving-average gradient norm ("norm_<term>").
        """
        present = [name for name in BALANCED_TERMS if name in terms and self.weights[name] > 0]
        grads, norms = [], []
        for name in present:
            grad, = torch.autograd.grad(terms[name], output, retain_graph=True)
            grads.append(grad.float())
            norms.append(grad.float().flatten(1).norm(dim=1).mean())
        combined = torch.zeros_like(output, dtype=torch.float32)
        logged: dict[str, float] = {}
        if present:
            current = _mean_over_ranks(torch.stack(norms).double())
            total_weight = sum(self.weights[name] for name in present)
            for name, grad, norm in zip(present, grads, current, strict=True):
                row = self.norms[BALANCED_TERMS.index(name)]
                row.mul_(self.decay).add_(torch.stack([norm, norm.new_ones(())]))
                average = row[0] / row[1]
                share = self.weights[name] / total_weight
                combined += grad * float(share * self.total_norm / (average + 1e-12))
                logged[f"norm_{name}"] = float(average)
        rest = [t for name, t in terms.items() if name not in present and t.requires_grad]
        roots = [output] + ([torch.stack(rest).sum()] if rest else [])
        grad_roots = [combined.to(output.dtype)] + ([torch.ones((), device=output.device)]
                                                     if rest else [])
        torch.autograd.backward(roots, grad_roots)
        return logged
