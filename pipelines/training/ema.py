"""An exponential moving average of a model's weights, kept in a second copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEMA(nn.Module):
    """An exponential moving average of a model's weights.

    ``model`` holds the averaged weights; buffers that are not floats (flags, counters)
    are copied.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so the
    average is not dominated by the random initialization.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        current = model.state_dict()
        for name, average in self.model.state_dict().items():
            value = current[name]
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), 1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1
