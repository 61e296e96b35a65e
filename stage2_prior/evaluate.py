"""How well each prior predicts the held-out codes, in bits per code.

For a prior p and the N val grids of H x W codes,

    bits per code = -1 / (N H W) * sum_{n, i, j} log2 p(z^n_ij | z^n_<ij)

(for the independent priors the condition is empty). It is the cross-entropy of the val
codes under the prior: log2 K for the uniform prior, the entropy of the training
frequencies (plus the train/val mismatch) for the marginal one, and lower still for a
learned prior that uses the context. ``evaluate(run_dir)`` writes
``DIR/stage2/bits_per_code.json`` = {"learned", "marginal", "uniform", "num_embeddings"} plus
``learned_train``, the learned prior on (up to 10,000) training grids, scored the same way: its gap
to ``learned`` shows how much the prior overfits.

Bits per dimension. When the val code file carries stage 1's per-image distortion
D_n = -log2 p(x_n | z_n) (written by ``stage1_vqvae encode``; stage 2 never loads stage 1),
each prior's negative ELBO per sub-pixel on the val images is

    bits/dim(p) = 1/N sum_n (D_n + R_p(z_n)) / (C H W) = (mean_n D_n + h w * bits_per_code(p)) / (C H W),

R_p being the prior's exact code length of the grid (h w log2 K for the uniform prior). The
distortion term is the same for every prior. The VQ posterior q(z | x) is deterministic, so
this is the negative ELBO with zero posterior entropy, an upper bound on -log2 p(x) / (C H W).
``bits_per_code.json`` then also holds ``bits_per_dim`` = {"learned", "marginal", "uniform",
"distortion"}, ``distortion_bits_per_image``, ``dims_per_image`` and ``likelihood``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from data.codes import load_codes, load_distortion
from data.errors import UserError
from data.io import write_json
from data.provenance import KEY, fingerprint
from data.config import Config
from data.rundir import RunPaths, run_config
from data.training import resolve_device

from .baselines import PRIORS, MarginalPrior, UniformPrior
from .common import eval_mode, module_device
from .learned import learned_prior_from_state, load_prior_checkpoint

TRAIN_GRIDS = 10_000  # train grids the learned prior is also scored on, to show its train/val gap


def bits_inputs(paths: RunPaths) -> list[Path]:
    """The run files ``bits_per_code.json`` is computed from."""
    return [paths.stage2_checkpoint, paths.codes("val"), paths.codes("train")]


@torch.no_grad()
def bits_per_code(prior: nn.Module, codes: torch.Tensor, labels: Optional[torch.Tensor] = None,
                  batch_size: int = 256) -> float:
    """Mean negative log2-likelihood of ``codes`` (N, H, W) under ``prior`` (eval mode, float64 sums)."""
    device = module_device(prior)
    total = 0.0
    with eval_mode(prior):
        for start in range(0, codes.shape[0], batch_size):
            x = codes[start:start + batch_size].to(device)
            y = labels[start:start + batch_size].to(device) if labels is not None else None
            log_probs = prior(x, y).double().log_softmax(dim=1)
            total -= log_probs.gather(1, x.unsqueeze(1)).sum().item()
    return total / (codes.numel() * math.log(2))


def evaluate(run_dir: str | os.PathLike, config: Optional[Config] = None) -> dict:
    """Bits per val code under the learned, marginal and uniform priors; printed and saved as JSON.

    ``config`` is the run's (its saved one when not given): it says the device.
    """
    paths = RunPaths(run_dir)
    config = config or run_config(paths)
    sources = fingerprint(paths, bits_inputs(paths))
    state = load_prior_checkpoint(paths.stage2_checkpoint)
    k = state["num_embeddings"]
    codes, labels, _ = load_codes(paths.codes("val"), split="val", num_embeddings=k, grid=tuple(state["grid"]),
                                  stage1_checkpoint_sha256=state["stage1_checkpoint_sha256"])
    if state["num_classes"] and labels is None:
        raise UserError(f"the prior is class-conditional but {paths.codes('val')} has no labels; "
                        "encode a labelled dataset")
    device = resolve_device(config.run.device)
    learned = learned_prior_from_state(state, paths.stage2_checkpoint).to(device)
    train_codes, train_labels, _ = load_codes(paths.codes("train"), split="train", num_embeddings=k,
                                              grid=tuple(state["grid"]),
                                              stage1_checkpoint_sha256=state["stage1_checkpoint_sha256"])
    conditional = bool(state["num_classes"])
    result = {
        "learned": bits_per_code(learned, codes, labels if conditional else None),
        "learned_train": bits_per_code(learned, train_codes[:TRAIN_GRIDS],
                                       train_labels[:TRAIN_GRIDS] if conditional else None),
        "marginal": bits_per_code(MarginalPrior(state["marginal_log_probs"]), codes),
        "uniform": bits_per_code(UniformPrior(k), codes),
        "num_embeddings": k,
    }
    distortion = load_distortion(paths.codes("val"))
    if distortion is not None:
        result.update(bits_per_dim_entries(result, distortion, math.prod(codes.shape[1:])))
    write_json(paths.bits, {**result, KEY: sources})
    print(format_table(result, codes.shape[0]))
    return result


def bits_per_dim(bits: dict, distortion_bits_per_image: float, codes_per_image: int, dims: int) -> dict:
    """{prior: (D + h w * bits_per_code[prior]) / dims} for each prior, and "distortion": D / dims."""
    return {**{p: (distortion_bits_per_image + codes_per_image * bits[p]) / dims for p in PRIORS},
            "distortion": distortion_bits_per_image / dims}


def bits_per_dim_entries(bits: dict, distortion, codes_per_image: int) -> dict:
    """The bits-per-dimension entries of bits_per_code.json from the val split's ``Distortion``."""
    mean = distortion.bits.mean().item()
    return {"bits_per_dim": bits_per_dim(bits, mean, codes_per_image, distortion.dims),
            "distortion_bits_per_image": mean, "dims_per_image": distortion.dims,
            "likelihood": distortion.likelihood}


def format_table(result: dict, num_grids: int) -> str:
    uniform, bpd = result["uniform"], result.get("bits_per_dim")
    lines = [f"bits per code on {num_grids} val grids (K={result['num_embeddings']})"
             + (f"; bits per dimension = (distortion {bpd['distortion']:.3f} + rate) per sub-pixel, "
                f"{result['likelihood']} decoder" if bpd else ""),
             f"{'prior':<10}{'bits/code':>10}{'x uniform':>11}" + (f"{'bits/dim':>10}" if bpd else "")]
    for name in PRIORS:
        lines.append(f"{name:<10}{result[name]:>10.3f}{result[name] / uniform:>11.3f}"
                     + (f"{bpd[name]:>10.3f}" if bpd else ""))
    lines.append(f"(the learned prior on up to {TRAIN_GRIDS} train grids: {result['learned_train']:.3f} bits per code)")
    return "\n".join(lines)
