"""The decoder's likelihood of 8-bit pixels: a discretised Gaussian or logistic over the 256 levels.

An 8-bit sub-pixel takes one of 256 levels k. In the model range level k sits at
x_k = k/255 - 0.5 and owns the bin [x_k - 1/510, x_k + 1/510], except the two edge bins, which
are open: level 0 owns (-inf, x_0 + 1/510] and level 255 owns [x_255 - 1/510, +inf). A
continuous distribution with location mu and scale s (standard CDF F) gives level k the mass
of its bin,

    P(k | mu, s) = F((hi_k - mu) / s) - F((lo_k - mu) / s),

so the 256 probabilities sum to exactly 1: a likelihood of the data, not a density, and
-log2 P(k) is a code length in bits. ``family`` is ``gaussian`` (F = Phi) or ``logistic``
(F = sigmoid, as in PixelCNN++).

The mass is computed in log space. Both families are symmetric, F(-z) = 1 - F(z), so a bin
in the upper half is mirrored into the lower half, where log F is accurate even far in the
tail; then log(F(b) - F(a)) = log F(b) + log(1 - exp(log F(a) - log F(b))). When a bin holds
less than a thousandth of F(b) that difference loses digits, and the density at the bin's
centre times its width is used instead (PixelCNN++'s fallback; exact to ~1e-7 there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FAMILIES = ("gaussian", "logistic")
HALF_BIN = 0.5 / 255  # half the width of one level's bin in the model range
LOG_SCALE_MIN = -7.0  # as PixelCNN++: scales below e^-7 (a quarter of a bin) are clamped
TINY_BIN = -1e-3  # log F(a) - log F(b) above this: the bin holds < 0.1% of F(b), use centre density x width
LOG_2PI = math.log(2 * math.pi)


def standard_log_cdf(z: torch.Tensor, family: str) -> torch.Tensor:
    """log F(z) of the standard distribution: log Phi(z) or log sigmoid(z)."""
    return torch.special.log_ndtr(z) if family == "gaussian" else F.logsigmoid(z)


def standard_log_pdf(z: torch.Tensor, family: str) -> torch.Tensor:
    """log f(z): -z^2/2 - log(2 pi)/2, or log sigmoid(z) + log sigmoid(-z) for the logistic."""
    if family == "gaussian":
        return -0.5 * z.square() - 0.5 * LOG_2PI
    return F.logsigmoid(z) + F.logsigmoid(-z)


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d <= 0, accurate on both sides of -log 2 (Maechler 2012)."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def bin_edges(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised edges (lo, hi) of the bins of the levels ``x`` (model range), edge bins open."""
    inv_scale = torch.exp(-log_scale)
    lo = torch.where(x < -0.5 + HALF_BIN, -math.inf, (x - HALF_BIN - mean) * inv_scale)
    hi = torch.where(x > 0.5 - HALF_BIN, math.inf, (x + HALF_BIN - mean) * inv_scale)
    return lo, hi


def discretized_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                         family: str = "gaussian") -> torch.Tensor:
    """log P(level x | mean, exp(log_scale)) in nats, elementwise (broadcasting); x = k/255 - 0.5.

    Differentiable in ``mean`` and ``log_scale`` (the logistic decoder trains on it).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    lo, hi = bin_edges(x, mean, log_scale)
    flip = (lo + hi) > 0  # the bin's centre lies above the mode: mirror it into the lower tail
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)  # b is always finite, a is -inf for open bins
    open_bin = torch.isinf(a)
    a_finite = torch.where(open_bin, torch.zeros_like(a), a)  # keeps gradients finite through torch.where
    log_fb = standard_log_cdf(b, family)
    log_fa = torch.where(open_bin, torch.full_like(a, -math.inf), standard_log_cdf(a_finite, family))
    d = log_fa - log_fb
    tiny = (d > TINY_BIN) & ~open_bin
    exact = log_fb + log1mexp(torch.where(tiny, torch.full_like(d, -1.0), d))
    centre = standard_log_pdf((a_finite + b) / 2, family) + torch.log(torch.where(open_bin, torch.ones_like(b),
                                                                                   b - a_finite))
    return torch.where(tiny, centre, exact)


def nll_bits(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, family: str) -> torch.Tensor:
    """-log2 p(x) per image: the discretised log-likelihood summed over (C, H, W), in float64 bits, (B,)."""
    log_p = discretized_log_prob(x.double(), mean.double(), log_scale.double(), family)
    return -log_p.flatten(1).sum(1) / math.log(2)


def reference_nats(variance: float) -> float:
    """Nats per sub-pixel of a discretised Gaussian with the data's variance: 0.5 log(2 pi e var) + log 255.

    It is to the logistic loss what the data variance is to the MSE: dividing by it makes the
    reconstruction term 1 for a decoder that knows only the data's spread, as NMSE is 1 for one
    that predicts only the data's mean, so both likelihoods train at a comparable loss scale.
    """
    return 0.5 * math.log(2 * math.pi * math.e * variance) + math.log(255)


FIT_SUBPIXELS = 2**18  # sub-pixels per channel the scale is fitted on: its standard error is then ~0.2%
COARSE_SUBPIXELS = 2**14  # the first, wide search runs on this many


def golden_section_max(f, lo: float, hi: float, iterations: int) -> float:
    """The argmax of a unimodal ``f`` on [lo, hi]: each step keeps the 0.618 of the bracket holding the max."""
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc >= fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = f(d)
    return (lo + hi) / 2


@torch.no_grad()
def fit_log_scale(x: torch.Tensor, mean: torch.Tensor, family: str = "gaussian", seed: int = 0) -> float:
    """The maximum-likelihood log-scale of one channel: argmax_t sum_i log P(x_i | mean_i, e^t).

    Golden-section search on t = log s of the exact discretised log-likelihood (summed in
    float64), on up to ``FIT_SUBPIXELS`` sub-pixels drawn at random (fixed seed) from ``x``:
    first over s in [1e-4, 2] on ``COARSE_SUBPIXELS`` of them (24 steps), then within
    +-0.1 of that on all of them (14 steps), which pins s to ~0.05%, well inside its standard
    error. The log-likelihood of a channel's residuals is unimodal in t in practice.
    """
    x, mean = x.flatten(), mean.flatten()
    order = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(seed))[:FIT_SUBPIXELS]
    x, mean = x[order.to(x.device)], mean[order.to(x.device)]

    def loglik(n: int):
        return lambda t: discretized_log_prob(x[:n], mean[:n], torch.tensor(t, dtype=x.dtype, device=x.device),
                                              family).sum(dtype=torch.float64).item()

    coarse = golden_section_max(loglik(COARSE_SUBPIXELS), math.log(1e-4), math.log(2.0), 24)
    return golden_section_max(loglik(FIT_SUBPIXELS), coarse - 0.1, coarse + 0.1, 14)
