"""TokenLM: a decoder-only transformer over code tokens, in plain PyTorch.

Pre-norm blocks (LayerNorm, causal self-attention through
``F.scaled_dot_product_attention``, GELU MLP), learned factorized positions (one table per
grid axis and one for the residual level, summed; see ``vqtok.lm.layout``) and an output
layer tied to the token embedding, plus (``output_bias``) a logit bias per residual level
that training starts at the code frequencies. ``forward`` takes an optional ``KVCache`` so that
sampling and decoding cost one token's work per step instead of the whole prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.lm.config import LMConfig
from vqtok.models.identity import content_hash


@dataclass
class KVCache:
    """Per layer, the keys and values of the slots seen so far: (B, heads, T, head_dim)."""

    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)

    @property
    def length(self) -> int:
        """T, the slots cached."""
        return 0 if not self.keys or self.keys[0] is None else self.keys[0].shape[2]

    def select(self, rows: Tensor) -> KVCache:
        """The cache of the batch rows ``rows`` (int64 (B',)): for batches that shrink."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values])


class Attention(nn.Module):
    """Causal multi-head self-attention that appends to a KV cache when given one."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.heads = config.num_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        """x: (B, L, D) -> (B, L, D); the L slots follow the cached ones."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            if len(cache.keys) <= layer:
                cache.keys.append(None)
                cache.values.append(None)
            if cache.keys[layer] is not None:
                past = cache.keys[layer].shape[2]
                k = torch.cat([cache.keys[layer], k], dim=2)
                v = torch.cat([cache.values[layer], v], dim=2)
            cache.keys[layer], cache.values[layer] = k, v
        mask = None
        if past and length > 1:  # new slots see every cached one and the new ones causally
            mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=past == 0 and length > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        hidden = config.mlp_ratio * config.d_model
        self.mlp = nn.Sequential(nn.Linear(config.d_model, hidden), nn.GELU(),
                                 nn.Linear(hidden, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class TokenLM(nn.Module):
    """The LM: token ids and slot positions -> next-token logits.

    Args:
        config: Architecture and layout.
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.token = nn.Embedding(config.vocab_size, d)
        # Row 0 of each table is "no position" (the slot that predicts EOS): kept at zero.
        self.axes = nn.ModuleList(nn.Embedding(n + 1, d, padding_idx=0) for n in config.layout)
        self.level = nn.Embedding(config.num_levels + 1, d, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d)
        # Row 0 serves the EOS slot, row q + 1 the codes of level q.
        self.output_bias = (nn.Parameter(torch.zeros(config.num_levels + 1, config.vocab_size))
                            if config.output_bias else None)
        self._init()

    def _init(self) -> None:
        """GPT-2 initialization: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for layer in (block.attn.out, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / (2 * self.config.num_layers) ** 0.5)
        with torch.no_grad():
            for table in (*self.axes, self.level):
                table.weight[0].zero_()

    @torch.no_grad()
    def init_output_bias(self, counts: Tensor) -> None:
        """Start the output bias at each level's log code frequency (add-1/2 smoothed).

        With the tied output layer's small initial logits, the fresh LM then predicts each
        level's code frequencies: it begins at the static frequency coder's rate and the
        context has only to add to it. Other tokens (BOS, classes) get the rarest code's
        bias; the EOS slot is left at zero.

        Args:
            counts: (Q, K) how often each code occurs at each level in the training tokens.

        Raises:
            ValueError: The LM has no output bias, or ``counts`` has another shape.
        """
        config = self.config
        if self.output_bias is None:
            raise ValueError("this LM has no output bias (output_bias = false)")
        if tuple(counts.shape) != (config.num_levels, config.codebook_size):
            raise ValueError(f"counts of shape {list(counts.shape)}, expected "
                             f"[{config.num_levels}, {config.codebook_size}]")
        smoothed = counts.double() + 0.5
        log_frequency = (smoothed / smoothed.sum(dim=1, keepdim=True)).log()
        rows = log_frequency.min(dim=1, keepdim=True).values.expand(-1, config.vocab_size)
        rows = rows.clone()
        rows[:, : config.codebook_size] = log_frequency
        self.output_bias[1:] = rows.to(self.output_bias.dtype)

    @property
    def lm_id(self) -> str:
        """Content hash of config and weights: what .vqt headers record."""
        return content_hash(self.config.to_dict(), self.state_dict())

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens int64 (B, L), positions int64 ([B,] L, axes + 1) -> (B, L, D)."""
        x = self.token(tokens)
        for axis, table in enumerate(self.axes):
            x = x + table(positions[..., axis])
        return x + self.level(positions[..., -1])

    def forward(self, tokens: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            tokens: int64 (B, L) token ids, following the slots held in ``cache``.
            positions: int64 ([B,] L, axes + 1) from ``vqtok.lm.layout.slot_positions``.
            cache: Appended to in place; None attends within ``tokens`` only.

        Returns:
            (B, L, vocab_size) logits in the dtype of the weights.
        """
        x = self.drop(self.embed(tokens, positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        logits = self.norm(x) @ self.token.weight.T  # weight tying
        if self.output_bias is not None:
            logits = logits + self.output_bias[positions[..., -1]]
        return logits
