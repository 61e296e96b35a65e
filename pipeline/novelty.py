"""Are the samples new images or copies? Nearest training images, in pixel and in feature space.

For an image x and the training images t_1..t_N, its nearest-neighbour distance is

    d(x) = min_n ||e(x) - e(t_n)||

for an embedding e: pixel space, e(x) = x / sqrt(C H W) with pixels in [0, 1] (so d is the
root-mean-square pixel difference), or the feature classifier's penultimate layer. Held-out
val images are new by construction, so their distances say how far a new image of this data
typically lies from the training set. A sample closer to its nearest training image than the
1st percentile of the val images' distances is counted as a copy:

    copy_fraction = #{samples x : d(x) < quantile_0.01(d(val))} / #samples.

Pixel space is the one that answers "is this a copy?"; feature space also flags samples that
are the same garment in another rendering. Distances are computed chunk by chunk (queries in
memory, training images ``chunk`` at a time), so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from data import to_model_range

COPY_PERCENTILE = 0.01  # a sample closer than this quantile of the val images' distances is a copy
Embed = Callable[[torch.Tensor], torch.Tensor]  # model-range images (B, C, H, W) -> vectors (B, F)


def pixel_embedding(images: torch.Tensor) -> torch.Tensor:
    """(B, C*H*W) pixels in [0, 1] (clamped) divided by sqrt(C H W): Euclidean distance = RMS pixel difference."""
    flat = (images.float().clamp(-0.5, 0.5) + 0.5).flatten(1)
    return flat / math.sqrt(flat.shape[1])


@torch.no_grad()
def nearest(queries: torch.Tensor, reference_chunks: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query's nearest reference, references given as consecutive chunks (R_i, F)."""
    best = torch.full((len(queries),), math.inf)
    index = torch.zeros(len(queries), dtype=torch.long)
    offset = 0
    for chunk in reference_chunks:
        d, i = torch.cdist(queries.float(), chunk.float()).min(dim=1)
        closer = d < best
        best[closer], index[closer] = d[closer], i[closer] + offset
        offset += len(chunk)
    return best, index


def nn_distances(images: torch.Tensor, train_images, embed: Embed, chunk: int = 2048):
    """(distance, index) of the nearest uint8 ``train_images`` (N, C, H, W) for each model-range image."""
    queries = torch.cat([embed(images[i:i + chunk]) for i in range(0, len(images), chunk)])
    chunks = (embed(to_model_range(train_images[i:i + chunk])) for i in range(0, len(train_images), chunk))
    return nearest(queries, chunks)


def copy_statistics(sample_distances: torch.Tensor, val_distances: torch.Tensor) -> dict:
    """Median nearest-training distances of samples and val images, and the share of samples that are copies."""
    threshold = torch.quantile(val_distances.double(), COPY_PERCENTILE).item()
    return {"median_nn_distance_samples": sample_distances.median().item(),
            "median_nn_distance_val": val_distances.median().item(),
            "copy_fraction": (sample_distances < threshold).double().mean().item(),
            "copy_threshold": threshold}


def measure_novelty(samples: torch.Tensor, val: torch.Tensor, train_images, feature_embed: Embed) -> tuple[dict, dict]:
    """(metrics, neighbours) for model-range ``samples`` and ``val`` images against uint8 ``train_images``.

    metrics: the pixel-space statistics at the top level (``space``: "pixel") and the same in
    feature space under ``feature``; neighbours: per space, the samples' distances and indices.
    """
    neighbours, stats = {}, {}
    for space, embed in (("pixel", pixel_embedding), ("feature", feature_embed)):
        sample_d, sample_i = nn_distances(samples, train_images, embed)
        val_d, _ = nn_distances(val, train_images, embed)
        stats[space] = copy_statistics(sample_d, val_d)
        neighbours[space] = (sample_d, sample_i)
    return {"space": "pixel", **stats["pixel"], "feature": stats["feature"], "samples": len(samples),
            "train_images": len(train_images)}, neighbours


def neighbour_rows(samples: torch.Tensor, train_images, neighbours: dict, chosen: torch.Tensor) -> torch.Tensor:
    """Images for a 3-row grid: the ``chosen`` samples, their nearest training images in pixel, then feature space."""
    rows = [samples[chosen].float()]
    rows += [to_model_range(train_images[neighbours[space][1][chosen]]) for space in ("pixel", "feature")]
    return torch.cat(rows)
