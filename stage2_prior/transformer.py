"""The learned prior's second family: a decoder-only transformer over the raster-scanned code grid.

The grid ``z`` of H x W codes is read in raster order as one sequence z_0, ..., z_{N-1}
(N = HW, position t = i W + j holds z_ij), and the prior factorises it as the PixelCNN does,

    p(z) = prod_t p(z_t | z_0, ..., z_{t-1}).

The input at position t is the code before it (a start token at t = 0) plus learned
embeddings of the row and the column of t, the position being predicted, plus the class
embedding of a class-conditional prior:

    x_t = E[z_{t-1}] + R[i_t] + C[j_t] + Y[y],      z_{-1} = the start token (row K of E)

Then ``layers`` pre-norm blocks (as in GPT-2) and a linear head:

    x <- x + Attention(LayerNorm(x))         causal multi-head self-attention: t attends to 0..t
    x <- x + MLP(LayerNorm(x))               Linear(C, 4C), GELU, Linear(4C, C)
    logits_t = W LayerNorm(x_t)              over the K codes

``x_t`` holds z_{t-1} and attention never looks ahead, so ``logits_t`` depends on z_<t only.
Attention is ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on a GPU).

Sampling keeps every layer's keys and values (``KVCache``): a new code costs one position's
pass through the blocks, its query attending to the cached keys, instead of a whole forward.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from data.config import TransformerConfig

from .common import check_labels


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, not even called where it changes nothing: in the sampler's per-code steps a call
    costs about as much as a small matrix product."""
    return F.dropout(x, p, training=True) if training and p > 0 else x


class KVCache:
    """One layer's keys and values of the positions drawn so far, in preallocated (n, heads, N, d) buffers."""

    def __init__(self, n: int, heads: int, length: int, head_dim: int, like: torch.Tensor):
        self.keys = like.new_empty(n, heads, length, head_dim)  # only the positions written so far are read
        self.values = like.new_empty(n, heads, length, head_dim)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values (n, heads, t, d); return all so far."""
        end = self.length + k.shape[2]
        self.keys[:, :, self.length:end], self.values[:, :, self.length:end] = k, v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class CausalSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d) + causal mask) V for each of ``heads`` heads of width d = C / heads."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        if cache is None:  # the whole sequence at once
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        else:  # the newest position attends to itself and every cached one: no mask, and for one
            # query two small products beat the fused kernel's set-up (docs/results.md, "Transformer sampling")
            keys, values = cache.append(k, v)
            y = torch.softmax(q @ keys.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ values
        return dropout(self.out(rearrange(y, "b h t d -> b t (h d)")), self.dropout, self.training)


class Block(nn.Module):
    """x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = CausalSelfAttention(hidden, heads, dropout)
        self.mlp_norm = nn.LayerNorm(hidden)
        self.grow, self.shrink = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)
        self.dropout = dropout

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.shrink(F.gelu(self.grow(x))), self.dropout, self.training)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cache)
        return x + self.mlp(self.mlp_norm(x))


class CodeTransformer(nn.Module):
    """Autoregressive prior over (B, H, W) grids of codes in [0, K); returns logits (B, K, H, W).

    ``grid`` = (rows, columns) sizes the position embeddings: any grid up to it is accepted.
    ``num_classes > 0`` makes it class-conditional (``forward`` then needs ``labels`` (B,)).
    The architecture is a ``TransformerConfig`` (hidden, layers, heads, dropout).
    """
    architecture = "transformer"  # its name in stage2.architecture and in checkpoints

    def __init__(self, num_embeddings: int, config: TransformerConfig = TransformerConfig(), num_classes: int = 0,
                 grid: tuple[int, int] = (7, 7)):
        super().__init__()
        c = config
        if num_embeddings < 1 or c.hidden < 1 or c.layers < 1 or c.heads < 1 or num_classes < 0:
            raise ValueError("num_embeddings, hidden, layers and heads must be positive, num_classes non-negative")
        if c.hidden % c.heads:
            raise ValueError(f"hidden ({c.hidden}) must be a multiple of heads ({c.heads})")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (rows, columns), both positive, got {grid!r}")
        self.config, self.num_embeddings, self.num_classes, self.grid = config, num_embeddings, num_classes, tuple(grid)
        self.token = nn.Embedding(num_embeddings + 1, c.hidden)  # row K: the start token
        self.row = nn.Embedding(grid[0], c.hidden)
        self.column = nn.Embedding(grid[1], c.hidden)
        self.label = nn.Embedding(num_classes, c.hidden) if num_classes else None
        self.blocks = nn.ModuleList(Block(c.hidden, c.heads, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.hidden)
        self.head = nn.Linear(c.hidden, num_embeddings)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights and zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def inputs(self, previous: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor,
               labels: Optional[torch.Tensor]) -> torch.Tensor:
        """x_t = E[z_{t-1}] + R[i_t] + C[j_t] (+ Y[y]) for ``previous`` codes (B, T) at positions (T,)."""
        x = self.token(previous) + self.row(rows) + self.column(columns)
        if self.label is not None:
            x = x + rearrange(self.label(labels), "b c -> b 1 c")
        return dropout(x, self.config.dropout, self.training)

    def positions(self, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The row and column (each (HW,)) of every raster position of a height x width grid."""
        if height > self.grid[0] or width > self.grid[1]:
            raise ValueError(f"this prior models grids up to {self.grid[0]}x{self.grid[1]}, got {height}x{width}")
        rows = repeat(torch.arange(height, device=device), "h -> (h w)", w=width)
        return rows, repeat(torch.arange(width, device=device), "w -> (h w)", h=height)

    def logits(self, x: torch.Tensor, caches: Optional[list[KVCache]] = None) -> torch.Tensor:
        """The blocks and the head: inputs (B, T, C) -> logits (B, T, K)."""
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches is not None else None)
        return self.head(self.norm(x))

    def forward(self, codes: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, height, width = codes.shape
        labels = check_labels(labels, self.num_classes, n, codes.device)
        sequence = rearrange(codes, "b h w -> b (h w)")
        previous = F.pad(sequence[:, :-1], (1, 0), value=self.num_embeddings)  # shifted right behind the start
        logits = self.logits(self.inputs(previous, *self.positions(height, width, codes.device), labels))
        return rearrange(logits, "b (h w) k -> b k h w", h=height)

    @torch.no_grad()
    def sample_cached(self, uniforms: torch.Tensor, labels: Optional[torch.Tensor], pick) -> torch.Tensor:
        """Codes (n, H, W) drawn in raster order, one position's pass per code through the KV cache.

        ``pick(logits (n, K), uniforms (n,)) -> codes`` draws a code
        (``stage2_prior.sampling.inverse_cdf``). Used by ``stage2_prior.sample``.
        """
        n, height, width = uniforms.shape
        rows, columns = self.positions(height, width, uniforms.device)
        heads = self.config.heads
        like = self.head.weight
        caches = [KVCache(n, heads, height * width, self.config.hidden // heads, like) for _ in self.blocks]
        codes = torch.zeros(n, height * width, dtype=torch.int64, device=uniforms.device)
        previous = torch.full((n, 1), self.num_embeddings, dtype=torch.int64, device=uniforms.device)
        for t in range(height * width):
            x = self.inputs(previous, rows[t:t + 1], columns[t:t + 1], labels)
            logits = self.logits(x, caches)[:, 0]
            codes[:, t] = pick(logits, uniforms[:, t // width, t % width])
            previous = codes[:, t:t + 1]
        return rearrange(codes, "n (h w) -> n h w", h=height)
