"""Ancestral sampling from a prior, one code at a time in raster order.

Every position (i, j) is drawn by inverse-CDF sampling with a uniform number drawn up front:

    q    = softmax(logits_ij / T) restricted to the top-k logits (renormalised)
    z_ij = min{c : q_0 + ... + q_c > u_ij * (q_0 + ... + q_{K-1})},   u ~ U[0, 1)^(n, H, W)

so the generator is consumed once, identically, whatever the method; two methods that
compute the same logits return the same codes.

* ``method="naive"`` runs the prior on the whole grid once per position (H*W forwards);
* ``method="cached"`` computes only what each new position needs (as in Fast PixelCNN++
  generation, Ramachandran et al. 2017). Position (i, j) needs, per layer, the horizontal
  stack's inputs at columns j-p..j of row i and the vertical stack's contribution from row
  i-1. So the sampler keeps, per layer, the last p+1 rows of the vertical stack's input and
  the current row of the horizontal stack's input; a new code costs one 1-position pass
  through the horizontal stacks, and a finished row one 1-row pass through the vertical
  stacks, each convolution evaluated as one matrix product per output position
  (``pixelcnn.dense``). Cost: O(layers * HW) small steps instead of O(layers * (HW)^2).

In float64 both methods return the same codes; in float32 the two ways of summing the same
products differ in the last bits, so the codes could differ where a uniform falls within
~1e-7 of a CDF boundary (not observed in the benchmarks, see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .pixelcnn import GatedPixelCNN, check_labels, dense, eval_mode, module_device

METHODS = ("cached", "naive")


@torch.no_grad()
def sample(prior: nn.Module, n: int, grid: tuple[int, int], temperature: float = 1.0, top_k: Optional[int] = None,
           labels: Union[int, torch.Tensor, None] = None, generator: Optional[torch.Generator] = None,
           method: str = "cached") -> torch.Tensor:
    """Draw ``n`` code grids of size ``grid`` = (H, W): an (n, H, W) int64 tensor on the prior's device.

    ``labels`` (int or (n,) tensor) selects classes of a conditional prior; ``top_k`` keeps the
    k most likely codes at each position; ``generator`` makes the draw reproducible. The prior
    runs in eval mode (dropout off) and is put back in its former mode afterwards.
    """
    k = prior.num_embeddings
    _check_arguments(n, grid, temperature, top_k, method, k)
    device = module_device(prior)
    if isinstance(labels, int):
        labels = torch.full((n,), labels, dtype=torch.int64)
    labels = check_labels(labels, prior.num_classes, n, device)
    uniforms = torch.rand((n, *grid), generator=generator, dtype=torch.float64,
                          device=generator.device if generator is not None else "cpu").to(device)

    def pick(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return inverse_cdf(logits, u, temperature, top_k)

    with eval_mode(prior):
        if method == "cached" and isinstance(prior, GatedPixelCNN):
            return _sample_cached(prior, uniforms, labels, pick)
        return _sample_naive(prior, uniforms, labels, pick)  # independent priors: nothing to cache


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
                top_k: Optional[int] = None) -> torch.Tensor:
    """Codes (B,) from logits (B, K) and uniforms u (B,) in [0, 1), in float64 (see the module docstring)."""
    logits = logits.double() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th are kept
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    codes = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return codes.clamp_(max=logits.shape[-1] - 1)


def _sample_naive(prior: nn.Module, uniforms: torch.Tensor, labels, pick) -> torch.Tensor:
    n, height, width = uniforms.shape
    codes = torch.zeros(n, height, width, dtype=torch.int64, device=uniforms.device)
    for i in range(height):
        for j in range(width):
            logits = prior(codes, labels)[:, :, i, j]
            codes[:, i, j] = pick(logits, uniforms[:, i, j])
    return codes


def _sample_cached(prior: GatedPixelCNN, uniforms: torch.Tensor, labels, pick) -> torch.Tensor:
    n, height, width = uniforms.shape
    layers = prior.layers
    p, c = layers[0].p, prior.embedding.embedding_dim
    like = dict(dtype=prior.embedding.weight.dtype, device=uniforms.device)
    biases = [layer.label_biases(labels) for layer in layers]  # (c_v, c_h), each (n, 2C) or 0
    row_biases = [repeat(c_v, "n c -> (n w) c", w=width) if torch.is_tensor(c_v) else c_v for c_v, _ in biases]
    v_rows = [torch.zeros(n, c, p + 1, width + 2 * p, **like) for _ in layers]  # vertical input, rows i-p..i
    v_to_h = [torch.zeros(n, width, 2 * c, **like) for _ in layers]  # W_vh v_pre of row i-1, per column
    codes = torch.zeros(n, height, width, dtype=torch.int64, device=uniforms.device)
    for i in range(height):
        h_rows = [torch.zeros(n, c, 1, p + width, **like) for _ in layers]  # horizontal input of row i
        for j in range(width):
            skip = 0.0
            for l, layer in enumerate(layers):
                window = h_rows[l][..., j:j + p + (0 if layer.first else 1)]  # columns j-p..j-1 or j-p..j
                h, s = layer.horizontal_position(window, h_rows[l][:, :, 0, p + j], v_to_h[l][:, j],
                                                 biases[l][1], apply=dense)
                if l + 1 < len(layers):
                    h_rows[l + 1][:, :, 0, p + j] = h
                skip = skip + s
            codes[:, i, j] = pick(prior.head(skip, apply=dense), uniforms[:, i, j])
            h_rows[0][:, :, 0, p + j] = prior.embedding(codes[:, i, j])
        if i + 1 < height:  # row i is complete: its vertical features, for row i+1
            v = prior.embed(codes[:, i:i + 1])
            for l, layer in enumerate(layers):
                v_rows[l] = torch.cat([v_rows[l][:, :, 1:], F.pad(v, (p, p))], dim=2)
                windows = rearrange(F.unfold(v_rows[l], (p + 1, 2 * p + 1)), "n d w -> (n w) d")  # one per column
                v, to_h = layer.vertical_row(windows, row_biases[l], apply=dense)
                v, v_to_h[l] = rearrange(v, "(n w) c -> n c 1 w", n=n), rearrange(to_h, "(n w) c -> n w c", n=n)
    return codes


def _check_arguments(n, grid, temperature, top_k, method, k) -> None:
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if len(grid) != 2 or any(not isinstance(s, int) or s <= 0 for s in grid):
        raise ValueError(f"grid must be (H, W) with positive integers, got {grid!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= k):
        raise ValueError(f"top_k must be an integer in [1, {k}] or None, got {top_k!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
