"""The two reference priors the learned one is measured against.

Both ignore the codes they are given and return the same logits at every position, so
they share the learned prior's interface: ``forward(codes, labels=None) -> (B, K, H, W)``,
and ``sample()`` and ``bits_per_code()`` work on all three.

* ``UniformPrior(K)``: p(z_ij = c) = 1/K, i.e. log2 K bits per code;
* ``MarginalPrior(log_probs)``: independent codes with the training set's smoothed
  frequencies, p(c) = (n_c + alpha) / (N + alpha K) with n_c the count of code c among
  the N training codes (add-alpha / Laplace smoothing; alpha = stage2.marginal_smoothing).
"""

from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn

from .learned import load_prior_checkpoint

PRIORS = ("learned", "marginal", "uniform")  # the three priors every comparison in the project uses


class IndependentPrior(nn.Module):
    """A prior whose logits ``log_probs`` (K,) are the same at every position and for every label."""

    num_classes = 0

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.register_buffer("log_probs", torch.as_tensor(log_probs, dtype=torch.float32).clone())
        self.num_embeddings = self.log_probs.numel()

    def forward(self, codes: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, h, w = codes.shape
        return self.log_probs.view(1, -1, 1, 1).expand(b, -1, h, w)


class UniformPrior(IndependentPrior):
    """Every code equally likely: log2 K bits per code."""

    def __init__(self, num_embeddings: int):
        super().__init__(torch.full((num_embeddings,), -math.log(num_embeddings)))


class MarginalPrior(IndependentPrior):
    """Independent codes with smoothed training-set frequencies (see the module docstring)."""

    @classmethod
    def fit(cls, codes: torch.Tensor, num_embeddings: int, smoothing: float = 1.0) -> "MarginalPrior":
        """Count the codes of ``codes`` (any shape) and add ``smoothing`` to every count."""
        return cls(marginal_log_probs(codes, num_embeddings, smoothing))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "MarginalPrior":
        """The marginal prior stored in a stage-2 checkpoint (fitted on that run's training codes)."""
        return cls(load_prior_checkpoint(path)["marginal_log_probs"])


def marginal_log_probs(codes: torch.Tensor, num_embeddings: int, smoothing: float) -> torch.Tensor:
    """log p(c) = log((n_c + alpha) / (N + alpha K)) as a float32 (K,) tensor (-inf for unseen codes if alpha = 0)."""
    counts = torch.bincount(codes.reshape(-1).cpu(), minlength=num_embeddings).double() + smoothing
    return (counts / counts.sum()).log().float()
