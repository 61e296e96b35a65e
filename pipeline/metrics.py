"""The report's numbers, ``DIR/report/metrics.json``, from a run's parsed files.

The numbers compared (see SPEC.md):

* bits per code: mean -log2 p(code) of the held-out codes under the learned prior,
  the marginal prior (independent codes with the training frequencies) and the uniform prior
  (log2 K); the ratio to uniform is the share of the uniform prior's code length still needed;
* Fréchet distance (pipeline/frechet.py) of decoded samples of each prior to real val images,
  read against what a perfect prior would score (``fd_perfect_prior``: decoded training grids),
  beside the metric's own noise (``fd_train_images``) and the decoded val codes
  (``fd_reconstructions``, which share their images with the val set and so read lower);
* bits per dimension: the negative ELBO per sub-pixel of the val images, stage 1's distortion
  plus each prior's rate (stage2_prior/evaluate.py), an upper bound on -log2 p(x) / (C H W);
* Inception FID (pipeline/inception.py), when measured, and the samples' novelty
  (pipeline/novelty.py): their nearest training images against the val images'.
"""

from __future__ import annotations

from stage2_prior import PRIORS

from .results import FD_KEYS, RunFiles


def build_metrics(f: RunFiles) -> dict:
    """SPEC's keys, plus ratios to the uniform prior, stage-2 curves' last values and timings."""
    bits = {p: float(f.bits[p]) for p in PRIORS}
    if f.bits.get("learned_train") is not None:
        bits["learned_train"] = float(f.bits["learned_train"])
    fd = {k: float(f.quality[k]) for k in FD_KEYS}
    draws = f.quality.get("fd_by_draw") or {}
    k = int(f.bits["num_embeddings"])
    grid = f.stage2.get("grid")  # (h, w) of a code grid, from stage2/summary.json
    return {
        "num_embeddings": k,
        "bits_per_code": bits,
        "bits_per_code_ratio_to_uniform": {p: ratio(bits[p], bits["uniform"]) for p in PRIORS},
        "stage1": {
            "val_recon_nmse": f.stage1["val_recon_nmse"],
            "perplexity": f.stage1["perplexity"],
            "codes_used": f.stage1["codes_used"],
            "codes_used_fraction": f.stage1["codes_used"] / k,
            **{key: f.stage1.get(key) for key in ("steps", "train_seconds", "images_per_s", "likelihood",
                                                  "val_distortion_bits_per_dim", "pixel_scale")},
        },
        "bits_per_image": {p: bits[p] * grid[0] * grid[1] for p in PRIORS} if grid else None,
        "stage2": {
            "steps": f.stage2.get("steps", last(f.stage2_rows, "step")),
            "final_train_bits_per_code": last(f.stage2_rows, "train_bits_per_code"),
            "final_val_bits_per_code": last(f.stage2_rows, "val_bits_per_code"),
            "train_seconds": f.stage2.get("train_time_s"),
            "grids_per_s": f.stage2.get("grids_per_s"),
            "parameters": f.stage2.get("parameters"),
            "grid": grid,
        },
        "sample_quality": {
            **fd,
            "fd_learned_over_perfect_prior": ratio(fd["fd_learned"], fd["fd_perfect_prior"]),
            "fd_learned_over_uniform": ratio(fd["fd_learned"], fd["fd_uniform"]),
            "fd_marginal_over_uniform": ratio(fd["fd_marginal"], fd["fd_uniform"]),
            "classifier_val_accuracy": f.quality.get("classifier_val_accuracy"),
            "classifier_task": f.quality.get("classifier_task"),
            "fd_samples": f.quality.get("fd_samples"),
            "fd_learned_draws": draws.get("learned"),
            "fd_perfect_prior_draws": draws.get("perfect_prior"),
            "fd_learned_by_temperature": {key.removeprefix("fd_learned_T"): float(value)
                                          for key, value in f.quality.items() if key.startswith("fd_learned_T")},
            "sampling": f.quality.get("sampling"),
            **inception_entries(f.inception),
        },
        "bits_per_dim": f.bits.get("bits_per_dim"),
        "likelihood": f.bits.get("likelihood") or f.stage1.get("likelihood"),
        "novelty": f.quality.get("novelty"),
        "dataset": f.config.data.dataset,
        "seed": f.config.run.seed,
    }


def inception_entries(inception: dict | None) -> dict:
    """``fid_inception_<set>`` and the number of images per set, when the Inception FID was measured."""
    if not inception:
        return {}
    keys = [k for k in inception if k.startswith("fid_inception_")]
    return {**{k: float(inception[k]) for k in keys}, "fid_inception_images": inception.get("images")}


def ratio(a: float, b: float) -> float | None:
    """``a / b``, or None when ``b`` is zero."""
    return a / b if b else None


def last(rows: list[dict], key: str):
    """The value of ``key`` in the last row that has it, or None."""
    return next((row[key] for row in reversed(rows) if key in row), None)
