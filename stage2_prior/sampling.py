"""Ancestral sampling from a prior, one code at a time in raster order.

Every position (i, j) is drawn by inverse-CDF sampling with a uniform number drawn up front:

    q    = softmax(logits_ij / T), restricted to the top-k codes and/or to the nucleus (the
           fewest most likely codes whose probabilities sum to at least top_p), renormalised
    z_ij = min{c : q_0 + ... + q_c > u_ij * (q_0 + ... + q_{K-1})},   u ~ U[0, 1)^(n, H, W)

so the generator is consumed once, identically, whatever the method; two methods that
compute the same logits return the same codes.

* ``method="naive"`` runs the prior on the whole grid once per position (H*W forwards);
* ``method="cached"`` computes only what each new position needs, with the model's own
  ``sample_cached``: the gated PixelCNN keeps the rows its stacks still need (as in Fast
  PixelCNN++ generation, Ramachandran et al. 2017), the transformer its keys and values;
  O(layers * HW) small steps instead of O(layers * (HW)^2).

In float64 both methods return the same codes; in float32 the two ways of summing the same
products differ in the last bits, so the codes could differ where a uniform falls within
~1e-7 of a CDF boundary (not observed in the benchmarks, see docs/results.md).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import nn

from data.errors import BadValue

from .common import check_labels, eval_mode, module_device

METHODS = ("cached", "naive")


@torch.no_grad()
def sample(prior: nn.Module, n: int, grid: tuple[int, int], temperature: float = 1.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, labels: Union[int, torch.Tensor, None] = None,
           generator: Optional[torch.Generator] = None, method: str = "cached") -> torch.Tensor:
    """Draw ``n`` code grids of size ``grid`` = (H, W): an (n, H, W) int64 tensor on the prior's device.

    ``labels`` (int or (n,) tensor) selects classes of a conditional prior; ``top_k`` keeps the
    k most likely codes at each position, ``top_p`` the nucleus of probability mass p in (0, 1];
    ``generator`` makes the draw reproducible. The prior
    runs in eval mode (dropout off) and is put back in its former mode afterwards.
    """
    k = prior.num_embeddings
    _check_arguments(n, grid, temperature, top_k, top_p, method, k)
    device = module_device(prior)
    if isinstance(labels, int):
        labels = torch.full((n,), labels, dtype=torch.int64)
    labels = check_labels(labels, prior.num_classes, n, device)
    uniforms = torch.rand((n, *grid), generator=generator, dtype=torch.float64,
                          device=generator.device if generator is not None else "cpu").to(device)

    def pick(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return inverse_cdf(logits, u, temperature, top_k, top_p)

    # inference_mode skips autograd's bookkeeping on every small tensor; the clone is an ordinary tensor
    with eval_mode(prior), torch.inference_mode():
        if method == "cached" and hasattr(prior, "sample_cached"):
            codes = prior.sample_cached(uniforms, labels, pick)
        else:
            codes = _sample_naive(prior, uniforms, labels, pick)  # independent priors: nothing to cache
    return codes.clone()


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0,
                top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """Codes (B,) from logits (B, K) and uniforms u (B,) in [0, 1), in float64 (see the module docstring)."""
    logits = logits.double() if temperature == 1.0 else logits.double() / temperature  # x / 1 is x: skip the pass
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th are kept
    if top_p is not None and top_p < 1.0:
        logits = logits.masked_fill(~nucleus(logits, top_p), float("-inf"))
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


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (B, K) of the nucleus: the most likely codes, in order, until their mass reaches ``top_p``.

    A code is in it when the mass of the codes ranked before it is still below ``top_p``, so
    the most likely code always is; among equal probabilities the lower index ranks first.
    """
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    return torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, mass_before < top_p)


class BadSamplingValue(BadValue, ValueError):
    """A sampling argument outside its rule: a user error, and a ``ValueError`` to callers of ``sample``."""


def check_sampling(n: int, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                   num_embeddings: Optional[int] = None, method: str = "cached") -> None:
    """The one check of the sampling arguments: the sampler, the pipeline and the command line use it.

    ``top_k`` is checked against ``num_embeddings`` when that is known.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BadSamplingValue("n", "must be at least 1", n)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise BadSamplingValue("temperature", "must be > 0 and finite", temperature)
    if top_k is not None and num_embeddings is not None and not (
            isinstance(top_k, int) and 1 <= top_k <= num_embeddings):
        raise BadSamplingValue("top_k", f"must lie in [1, {num_embeddings}]", top_k)
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise BadSamplingValue("top_p", "must lie in (0, 1]", top_p)
    if method not in METHODS:
        raise BadSamplingValue("method", f"must be one of {', '.join(METHODS)}", repr(method))


def _check_arguments(n, grid, temperature, top_k, top_p, method, k) -> None:
    check_sampling(n, temperature, top_k, top_p, k, method)
    if len(grid) != 2 or any(not isinstance(s, int) or s <= 0 for s in grid):
        raise ValueError(f"grid must be (H, W) with positive integers, got {grid!r}")
