"""Sample quality: the Fréchet distance between image sets in the feature classifier's features.

The recipe of FID, scaled down to the project's datasets: take the penultimate-layer activations
of a small classifier (``pipeline.classifier``) as features, fit a Gaussian to the features of
each image set, and compare the Gaussians with the Fréchet (2-Wasserstein) distance

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}).

FD is 0 for identical feature distributions and grows as the generated images' features move
away from the real ones, in their mean (first term) or their spread and correlations (the rest).
Values are comparable only within one feature space, that is one classifier.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .classifier import FeatureClassifier, features


def gaussian(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of (N, F) features, in float64."""
    feats = torch.as_tensor(feats, dtype=torch.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need (N, F) features with N >= 2, got shape {tuple(feats.shape)}")
    return feats.mean(0), torch.cov(feats.T).reshape(feats.shape[1], feats.shape[1])


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix: V diag(sqrt(max(w, 0))) V^T."""
    w, v = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets, computed in float64.

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}).

    The cross term is the trace of the square root of the symmetric PSD matrix
    M = S_a^{1/2} S_b S_a^{1/2}, i.e. the sum of the square roots of M's eigenvalues. Both
    square roots use symmetric eigendecompositions with tiny negative eigenvalues (rounding)
    clipped to 0, which stays stable for the rank-deficient covariances that ReLU features
    and few samples give. M has the eigenvalues of S_a S_b, so FD is symmetric in a and b.
    The result is clipped at 0 against rounding.
    """
    mu_a, cov_a = gaussian(feats_a)
    mu_b, cov_b = gaussian(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(0.0, fd.item())


# ---------------------------------------------------------------- a run's image sets


def sample_quality(classifier: FeatureClassifier, real: torch.Tensor,
                   generated: Mapping[str, torch.Tensor | list[torch.Tensor]]) -> dict:
    """{"fd_<name>": FD(real, generated[name])} for model-range image tensors (N, C, H, W).

    A list of tensors is several independent draws of one set: its entry is the mean of their
    distances, each of which is listed under ``"fd_by_draw"``.
    """
    real_feats = features(classifier, real)
    out, by_draw, done = {}, {}, {}
    for name, images in generated.items():
        draws = images if isinstance(images, list) else [images]
        if id(images) not in done:
            done[id(images)] = [frechet_distance(real_feats, features(classifier, x)) for x in draws]
        distances = done[id(images)]
        out[f"fd_{name}"] = sum(distances) / len(distances)
        if len(distances) > 1:
            by_draw[name] = distances
    return {**out, "fd_by_draw": by_draw} if by_draw else out
