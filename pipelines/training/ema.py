"""An exponential moving average of a model's weights, kept in a second copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vqtok.kernels import embed_from_stats
from vqtok.quantizers.vq import VectorQuantizer


class WeightEMA(nn.Module):
    """An exponential moving average of a model's weights.

    ``model`` holds the averaged weights; buffers that are not floats (flags, counters)
    are copied.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so the
    average is not dominated by the random initialization.

    A codebook learned by EMA is not a weight but a function of its statistics, e = m / N~
    (``VectorQuantizer``: cluster sizes N, Laplace-smoothed to N~, and embedding sums m).
    Averaging e, N and m one by one breaks that identity: the averaged model's codebook is
    not its own m / N~, and fine-tuning from it jumps at the first EMA step, which recomputes
    e from the statistics. So the statistics are averaged and each averaged codebook is
    recomputed from them.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights.

        Args:
            model: The live model, of the same architecture as the averaged copy.
        """
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            value = current[name]
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - decay)
            else:
                average.copy_(value)
        recompute_ema_codebooks(self.model)
        self.updates += 1


@torch.no_grad()
def recompute_ema_codebooks(model: nn.Module) -> int:
    """Set each EMA-learned codebook of ``model`` to m / N~ of its own statistics.

    Args:
        model: Any module; its ``VectorQuantizer`` layers with ``config.ema`` are updated.

    Returns:
        How many codebooks were recomputed.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, VectorQuantizer) and module.config.ema:
            stats = embed_from_stats(module.cluster_size, module.embed_sum, module.config.eps)
            module.codebook.copy_(stats)
            count += 1
    return count
