"""Vector quantisation with a straight-through gradient (van den Oord et al. 2017).

For encoder outputs z (B, D, H, W) and a codebook e (K, D), every vector z_n is replaced by
its nearest code:

    k_n = argmin_k ||z_n - e_k||^2          q_n = e_{k_n}

The decoder sees ``z + sg[q - z]``: the value of q with the gradient of z (straight-through,
exactly the identity). The loss is

    decay == 0:  ||q - sg[z]||^2 + beta * ||sg[q] - z||^2     (codebook term + commitment term)
    decay  > 0:  beta * ||sg[q] - z||^2                       (codebook follows EMA updates)

as means over all elements. With ``decay`` gamma > 0 the codebook is updated in training
mode by exponential moving averages of the assignment counts n_k and sums s_k = sum z_n:

    N_k <- gamma N_k + (1 - gamma) n_k
    m_k <- gamma m_k + (1 - gamma) s_k
    e_k <- m_k / N~_k,    N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace)

N and m start as if each code had been chosen once at its initial position (N = 1, m = e),
so a code that is never chosen stays where it is instead of collapsing to zero.

Nearest-code search works in row chunks on fp32 copies (autocast off), and never builds a
one-hot (N, K) matrix: the lookup is an embedding gather and the EMA sums an ``index_add``.
Under ``torch.distributed`` the counts and sums are all-reduced and restarts broadcast from
rank 0, so every process holds the identical codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

SEARCH_CHUNK = 4096  # rows of the (chunk, K) distance matrix held at once
ARGMIN_BLOCK = 32  # codes per block in the two-level argmin


def first_argmin(scores: torch.Tensor) -> torch.Tensor:
    """``scores.argmin(1)``, exactly (ties go to the first index), and faster on CPU.

    PyTorch's argmin tracks an index per element and does not vectorise; ``amin`` does. So take
    the minimum of each block of 32 codes, pick the first block holding the row minimum, and run
    argmin only over that block's 32 values: the first block with the minimum, then its first
    position, is the first index of the minimum. On accelerators ``argmin`` is already a single
    fast kernel, so only CPU tensors take the two-level path.
    """
    if scores.device.type != "cpu" or scores.shape[1] % ARGMIN_BLOCK:
        return scores.argmin(1)
    blocks = rearrange(scores, "n (b k) -> n b k", k=ARGMIN_BLOCK)
    best = blocks.amin(2).argmin(1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    return best * ARGMIN_BLOCK + blocks[rows, best].argmin(1)


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``codebook`` (K, D) for each row of ``flat`` (N, D), in chunks.

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; the ||z||^2 term is the same for every code,
    so the argmin needs only ||e||^2 - 2 z.e.
    """
    sq_norms = codebook.pow(2).sum(1)
    out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[0], SEARCH_CHUNK):
        rows = flat[start:start + SEARCH_CHUNK]
        out[start:start + SEARCH_CHUNK] = first_argmin(torch.addmm(sq_norms, rows, codebook.t(), alpha=-2.0))
    return out


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, D, H, W), straight-through
    loss: torch.Tensor  # scalar
    indices: torch.Tensor  # (B, H, W) int64
    perplexity: torch.Tensor  # scalar: exp(entropy of the batch's code usage)
    codes_used: torch.Tensor  # scalar: distinct codes chosen in the batch


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """Quantise (B, D, H, W) inputs to the nearest of ``num_embeddings`` D-dimensional codes.

    Args:
        num_embeddings: K, the codebook size.
        embedding_dim: D, the code dimension (the input's channel count).
        commitment_cost: beta, weight of the commitment term.
        decay: 0 for a codebook learned through its loss term; in (0, 1) for EMA updates.
        epsilon: Laplace smoothing of the EMA cluster sizes.
        init: ``uniform`` = U(-1/K, 1/K); ``random`` = K random encoder outputs of the first
            training batch; ``kmeans`` = k-means on the first training batch.
        dead_code_steps: in training, a code not chosen for this many consecutive steps is
            re-seeded with an encoder output of the current batch, drawn with probability
            proportional to its quantisation error; 0 disables.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25,
                 decay: float = 0.0, epsilon: float = 1e-5, init: str = "uniform",
                 dead_code_steps: int = 0, kmeans_iters: int = 10):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if init not in ("uniform", "random", "kmeans"):
            raise ValueError(f"init must be uniform, random or kmeans, got {init!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.commitment_cost, self.decay, self.epsilon = commitment_cost, decay, epsilon
        self.init, self.dead_code_steps, self.kmeans_iters = init, dead_code_steps, kmeans_iters

        codebook = torch.empty(num_embeddings, embedding_dim).uniform_(-1 / num_embeddings, 1 / num_embeddings)
        if self.use_ema:
            self.register_buffer("embedding", codebook)
            self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
            self.register_buffer("ema_weight", codebook.clone())
        else:
            self.embedding = nn.Parameter(codebook)
        self.register_buffer("initialized", torch.tensor(init == "uniform"))
        self.register_buffer("unused_steps", torch.zeros(num_embeddings, dtype=torch.long))

    @property
    def use_ema(self) -> bool:
        return self.decay > 0.0

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) current code vectors (the parameter itself when learned through the loss)."""
        return self.embedding

    def extra_repr(self) -> str:
        return (f"K={self.num_embeddings}, D={self.embedding_dim}, beta={self.commitment_cost}, "
                f"decay={self.decay}, init={self.init}, dead_code_steps={self.dead_code_steps}")

    # ------------------------------------------------------------------ forward

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d")
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat32 = flat.float()
            if self.training and not bool(self.initialized):
                self._data_init(flat32.detach())
            indices = self.nearest(flat32.detach())
            quantized = F.embedding(indices, self.embedding)  # (N, D), gradient to the codebook only
            commitment = F.mse_loss(flat32, quantized.detach())
            loss = self.commitment_cost * commitment
            if not self.use_ema:
                loss = loss + F.mse_loss(quantized, flat32.detach())
            counts = torch.bincount(indices, minlength=self.num_embeddings).float()
            if self.training:
                counts = self._update(flat32.detach(), indices, counts)
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        quantized = flat + (quantized.to(flat.dtype) - flat).detach()  # straight-through
        return QuantizerOutput(
            quantized=rearrange(quantized, "(b h w) d -> b d h w", b=b, h=h, w=w),
            loss=loss,
            indices=rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w),
            perplexity=perplexity,
            codes_used=(counts > 0).sum(),
        )

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` (N, D), in fp32 (see ``nearest_codes``)."""
        return nearest_codes(flat.float(), self.embedding.detach().float())

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for (B, H, W) indices, as (B, D, H, W)."""
        return rearrange(F.embedding(indices, self.embedding), "b h w d -> b d h w")

    # ------------------------------------------------------------------ training-time updates

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """EMA step and dead-code bookkeeping; returns the (global) counts of this step."""
        if _distributed():
            dist.all_reduce(counts)
        if self.use_ema:
            sums = torch.zeros_like(self.ema_weight).index_add_(0, indices, flat)
            if _distributed():
                dist.all_reduce(sums)
            self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.ema_weight.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            self._refresh_from_ema()
        if self.dead_code_steps > 0:
            self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
            dead = self.unused_steps >= self.dead_code_steps
            if dead.any():
                self._reseed(dead, flat, indices)
        return counts

    def _refresh_from_ema(self) -> None:
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.embedding.copy_(self.ema_weight / smoothed.unsqueeze(1))

    def _reseed(self, mask: torch.Tensor, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """Move the codes in ``mask`` onto current encoder outputs that are badly quantised.

        Outputs are drawn without replacement with probability proportional to their squared
        distance to their code (as in k-means++ seeding), so new codes go where the
        quantisation error is, rather than splitting an already well-covered dense region
        such as a plain background. Under several processes rank 0 draws from its own batch and
        broadcasts first how many codes it moves, then the vectors, so every rank moves the same
        codes to the same place even when the ranks' batches hold different numbers of badly
        quantised outputs.
        """
        count = torch.zeros((), dtype=torch.long, device=flat.device)
        new = None
        if not _distributed() or dist.get_rank() == 0:
            error = (flat - self.embedding.detach()[indices].float()).pow(2).sum(1)
            count.fill_(min(int(mask.sum()), int((error > 0).sum())))
            new = flat[torch.multinomial(error, int(count), replacement=False)] if count else flat[:0]
        if _distributed():
            dist.broadcast(count, src=0)
            if new is None:
                new = flat.new_empty(int(count), flat.shape[1])
            dist.broadcast(new, src=0)
        if int(count) < int(mask.sum()):  # fewer distinct badly-quantised outputs than dead codes: keep the rest
            mask = mask.clone()
            mask[mask.nonzero().flatten()[int(count):]] = False
        self._set_codes(mask, new)
        self.unused_steps.masked_fill_(mask, 0)

    def _set_codes(self, mask: torch.Tensor, vectors: torch.Tensor) -> None:
        self.embedding.data[mask] = vectors.to(self.embedding.dtype)
        if self.use_ema:
            self.ema_weight[mask] = vectors
            self.ema_cluster_size[mask] = 1.0

    @torch.no_grad()
    def _data_init(self, flat: torch.Tensor) -> None:
        """Initialise the codebook from encoder outputs: random samples, optionally refined by k-means."""
        centroids = flat[torch.randint(0, flat.shape[0], (self.num_embeddings,), device=flat.device)].clone()
        if self.init == "kmeans":
            for _ in range(self.kmeans_iters):
                assign = nearest_codes(flat, centroids)
                counts = torch.bincount(assign, minlength=self.num_embeddings).float()
                sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
                hit = counts > 0  # empty clusters keep their random sample
                centroids[hit] = sums[hit] / counts[hit].unsqueeze(1)
        if _distributed():
            dist.broadcast(centroids, src=0)
        self._set_codes(torch.ones(self.num_embeddings, dtype=torch.bool, device=flat.device), centroids)
        self.initialized.fill_(True)
