"""The whole job: stage 1 -> encode -> stage 2 -> evaluate -> samples -> sample quality -> report.

Training steps are complete when their summary says so (``stage1/summary.json``,
``stage2/summary.json`` at the steps the config asks for); code files when they match the stage-1
checkpoint; derived files (bits per code, sample grids, quality, report) when the fingerprint
they record matches the run's current checkpoints and settings (``pipeline.sources``). Every
file is written atomically, so resuming skips exactly what is current, continues an
interrupted training step from its checkpoint, and redoes whatever an earlier step changed,
saying why ("stage-2 checkpoint changed since bits_per_code.json").

Under ``accelerate launch`` every process trains, and only the main one encodes, evaluates,
samples, measures and reports while the others wait.

The Fréchet distances (and the Inception FID, when ``sample.inception_fid`` is on) compare the
same image sets: ``fd_image_sets`` draws them with one seed at the sample grids' settings. The
learned prior's distance is read against ``reference_sets``: what a perfect prior would score.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

from data import Config, load_split, to_model_range
from data.codes import load_codes
from data.datasets import save_image_grid, splits_read_once
from data.io import write_json
from data.provenance import KEY, stale_reason
from data.rundir import RunPaths, commit_config, prior_steps, read_summary_steps, run_lock
from data.training import is_main_process, wait_for_everyone
from stage1_vqvae.encode import encode_run
from stage1_vqvae.train import train as train_stage1
from stage2_prior.evaluate import evaluate as evaluate_prior
from stage2_prior.train import train as train_stage2

from . import sources
from .classifier import FeatureClassifier, features, load_or_train_classifier
from .frechet import sample_quality
from .inception import PACKAGE, WEIGHTS, inception_enabled, inception_fid, weights_file
from .novelty import measure_novelty, neighbour_rows
from .pipeline import PRIORS, VQPriorPipeline
from .report import write_report

# Distinct generator seeds per use, all derived from run.seed.
SEED_GRIDS, SEED_SWEEP, SEED_CLASSES, SEED_FD, SEED_REFERENCE = 0, 1, 2, 3, 4
NEIGHBOUR_COLUMNS = 12  # samples per nearest-training-image picture


def default_run_dir(config: Config) -> Path:
    return Path(config.run.dir) if config.run.dir else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run(config: Config, run_dir: Path, resume: bool = False) -> dict:
    """Run (or resume) every step of the job in ``run_dir``; returns the report's metrics (main process)."""
    main = is_main_process()
    if config.sample.inception_fid is True:
        weights_file()  # a missing fid extra is an error now, not after training
    with run_lock(run_dir, main), splits_read_once():
        return _run(config, RunPaths(run_dir), resume, main)


def _run(config: Config, paths: RunPaths, resume: bool, main: bool) -> dict:
    run_dir, timings = paths.root, {}
    say = print if main else (lambda *_: None)

    def step(name: str, why: Optional[str], work: Callable[[], object], everyone: bool = False) -> None:
        """Do ``work`` unless ``why`` is None (current). ``everyone``: every process works on it (training,
        the sharded encode) and they meet at a barrier after it; otherwise only the main process runs."""
        if why is None:
            say(f"[{name}] current, skipped")
        else:
            say(f"[{name}] {why}")
            tic = time.perf_counter()
            if everyone or main:
                work()
            timings[name] = round(time.perf_counter() - tic, 1)
        if everyone:
            wait_for_everyone()

    stage2_steps = read_summary_steps(paths.stage2_summary)
    step("stage 1: VQ-VAE", None if paths.stage1_summary.is_file() else "training",
         lambda: train_stage1(config, run_dir, resume=paths.stage1_checkpoint.exists()), everyone=True)
    step("encode", "encoding if not up to date", lambda: encode_run(run_dir, config), everyone=True)
    target = prior_steps(paths, config)  # read once the codes exist
    step("stage 2: prior", None if stage2_steps == target else
         ("training" if stage2_steps is None else f"continuing from {stage2_steps} to {target} steps"),
         lambda: train_stage2(config, run_dir, resume=paths.stage2_checkpoint.exists()), everyone=True)
    if not main:
        return {}
    commit_config(run_dir, config)  # sample settings may have changed on resume
    step("evaluate priors", stale_reason(paths.bits, sources.bits(paths)), lambda: evaluate_prior(run_dir, config))
    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    samples_stale = next((why for grid in sources.sample_grids(paths, config)
                          if (why := stale_reason(grid, sources.samples(paths, config)))), None)
    step("samples", samples_stale, lambda: write_samples(pipe, config, paths))
    step("sample quality", stale_reason(paths.quality, sources.quality(paths, config)),
         lambda: measure_quality(pipe, config, paths))
    if inception_enabled(config.sample.inception_fid, pipe.device):
        n = config.sample.fd_samples
        step("inception FID", stale_reason(paths.inception_fid, sources.inception(paths, config, n)),
             lambda: write_inception_fid(pipe, config, paths, n))
    metrics = write_report(run_dir, config)
    say(f"[report] {paths.index}  ({', '.join(f'{k} {v}s' for k, v in timings.items())})")
    return metrics


def _save_samples(pipe: VQPriorPipeline, path: Path, n: int, prior: str, config: Config, seed: int,
                  computed_from: dict, temperature: Optional[float] = None, labels=None) -> None:
    """One PNG grid of ``n`` samples, recording what it shows; a current one (an interrupted run's) is kept."""
    if stale_reason(path, computed_from) is None:
        return
    s = config.sample
    out = pipe(n, prior, temperature=s.temperature if temperature is None else temperature, top_k=s.top_k,
               top_p=s.top_p, labels=labels, seed=seed)
    save_image_grid(out.images, path, nrow=grid_columns(n), text=sources.png_text(computed_from))


def grid_columns(n: int) -> int:
    """Columns of a roughly square sample grid (at most 16)."""
    return max(1, min(16, round(n ** 0.5)))


def write_samples(pipe: VQPriorPipeline, config: Config, paths: RunPaths) -> None:
    """The grid of each prior, the temperature sweep, and per-class grids when conditional."""
    n, seed = config.sample.n, config.run.seed * 1000
    stamp = sources.samples(paths, config)
    for prior in PRIORS:
        _save_samples(pipe, paths.sample_grid(prior), n, prior, config, seed + SEED_GRIDS, stamp)
    for t in config.sample.sweep:
        _save_samples(pipe, paths.temperature_grid(t), n, "learned", config, seed + SEED_SWEEP, stamp,
                      temperature=float(t))
    for c in range(pipe.num_classes):
        _save_samples(pipe, paths.class_grid(c), min(n, 16), "learned", config, seed + SEED_CLASSES, stamp,
                      labels=c)


def fd_image_sets(pipe: VQPriorPipeline, config: Config, paths: RunPaths,
                  n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(real val images, {"reconstructions", "learned", "marginal", "uniform"}), n images each (at most the val split).

    The priors are sampled as their grids are (``sample.temperature``, ``top_k``, ``top_p``) with
    one seed, so every measure of sample quality sees the same images. Every set has the same
    size, since the Fréchet distance is biased by sample size.
    """
    s, seed = config.sample, config.run.seed * 1000 + SEED_FD
    real = to_model_range(load_split(config.data, "val").images[:n])
    n = len(real)
    val_codes, _, _ = load_codes(paths.codes("val"), split="val")
    generated = {"reconstructions": pipe.decode(val_codes[:n])}
    for prior in PRIORS:
        generated[prior] = pipe(n, prior, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=seed).images
    return real, generated


def measure_quality(pipe: VQPriorPipeline, config: Config, paths: RunPaths) -> dict:
    """Fréchet distances to the real val images, and the novelty of the learned prior's samples.

    The sets of ``fd_image_sets``, with ``sample.fd_draws`` independent sets of the learned prior
    (its FD is their mean), plus the learned prior at every other temperature of the sweep
    (``fd_learned_T<t>``, one set each, at the grids' top-k and top-p).
    """
    s, seed = config.sample, config.run.seed * 1000 + SEED_FD
    stamp = sources.quality(paths, config)
    real, generated = fd_image_sets(pipe, config, paths, s.fd_samples)
    first = generated["learned"]
    generated["learned"], speed = learned_draws(pipe, config, first)
    generated.update(reference_sets(pipe, config, paths, len(real)))
    for t in s.sweep:
        generated[f"learned_T{float(t):g}"] = generated["learned"] if float(t) == s.temperature else \
            pipe(len(real), "learned", temperature=float(t), top_k=s.top_k, top_p=s.top_p, seed=seed).images
    classifier = load_or_train_classifier(paths, config, pipe.device)  # (network, val accuracy), for both
    novelty = write_novelty(config, paths, real, first, classifier[0])
    return write_quality(paths, config, real, generated, classifier=classifier, computed_from=stamp,
                         extra={"novelty": novelty, "learned_sampling": speed})


def learned_draws(pipe: VQPriorPipeline, config: Config, first: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """``sample.fd_draws`` sets of the learned prior's images: ``first`` (``fd_image_sets``' set), then
    independent sets of the same size and sampling settings, each from its own seed; and how fast
    those later sets were made (sampling and decoding; None with a single draw).

    Draw d >= 1 uses seed ``1000 run.seed + SEED_FD + 10 d`` (at most 993 above the block's start for
    100 draws), so the draws of two run seeds never share random numbers."""
    s, seed = config.sample, config.run.seed * 1000 + SEED_FD
    tic = time.perf_counter()
    later = [pipe(len(first), "learned", temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                  seed=seed + 10 * draw).images for draw in range(1, s.fd_draws)]
    seconds, images = time.perf_counter() - tic, len(first) * len(later)
    speed = {"images": images, "seconds": round(seconds, 3),
             "images_per_s": round(images / seconds, 1)} if later else None
    return [first, *later], speed


def reference_sets(pipe: VQPriorPipeline, config: Config, paths: RunPaths, n: int) -> dict[str, list[torch.Tensor]]:
    """What the learned prior's Fréchet distance is read against: ``sample.fd_draws`` random sets of n
    training grids, decoded (``perfect_prior``), and the same training images themselves (``train_images``).

    A perfect prior would draw exactly the training codes, so its samples are decoded training grids:
    their mean distance to the val images is the best any prior can score with this stage 1. The
    real training images give the metric's own noise at this set size. The sets are drawn as the
    learned prior's are (as many, as large), each a uniform random subset without repetition.
    """
    train_codes, _, _ = load_codes(paths.codes("train"), split="train")
    train_images = load_split(config.data, "train").images
    generator = torch.Generator().manual_seed(config.run.seed * 1000 + SEED_REFERENCE)
    subsets = [torch.randperm(len(train_codes), generator=generator)[:n] for _ in range(config.sample.fd_draws)]
    return {"perfect_prior": [pipe.decode(train_codes[index]) for index in subsets],
            "train_images": [to_model_range(train_images[index]) for index in subsets]}


def write_quality(paths: RunPaths, config: Config, real: torch.Tensor,
                  generated: Mapping[str, torch.Tensor | list[torch.Tensor]],
                  device: str | torch.device = "cpu", log: Callable[[str], None] = print,
                  classifier: Optional[tuple[FeatureClassifier, float]] = None,
                  computed_from: dict | None = None, extra: dict | None = None) -> dict:
    """Compute FDs against ``real`` val images and write the run's ``quality.json``; returns its content.

    ``generated`` maps a name to model-range images; the report expects the names ``learned``,
    ``marginal``, ``uniform`` and the references ``perfect_prior``, ``train_images`` and
    ``reconstructions`` (decoded val codes).
    ``classifier`` is (network, val accuracy) when the caller has it, else the run's is loaded.
    ``computed_from`` is the file's provenance fingerprint (``pipeline.sources.quality``); ``extra``
    entries (the novelty statistics) are stored beside the distances.
    """
    classifier, val_accuracy = classifier or load_or_train_classifier(paths, config, device, log)
    quality = {
        **sample_quality(classifier, real, generated),
        "classifier_val_accuracy": val_accuracy,
        "classifier_task": classifier.task,
        "fd_samples": min(len(images[0] if isinstance(images, list) else images) for images in generated.values()),
        "fd_real_images": len(real),
        "feature_dim": classifier.config["feature_dim"],
        "sampling": {"temperature": config.sample.temperature, "top_k": config.sample.top_k,
                     "top_p": config.sample.top_p},
        **(extra or {}),
    }
    write_json(paths.quality, {**quality, KEY: computed_from} if computed_from else quality)
    return quality


def write_novelty(config: Config, paths: RunPaths, real: torch.Tensor, samples: torch.Tensor,
                  classifier: FeatureClassifier) -> dict:
    """Nearest training images of the learned prior's samples (``pipeline.novelty``), and two pictures of them.

    ``report/nearest_typical.png`` shows the first samples, ``nearest_closest.png`` the samples
    closest to a training image in pixel space (the likeliest copies); each above its nearest
    training image in pixel space, then in feature space.
    """
    train = load_split(config.data, "train").images
    stats, neighbours = measure_novelty(samples, real, train, lambda x: features(classifier, x).float())
    distances = neighbours["pixel"][0]
    chosen = {"typical": torch.arange(min(NEIGHBOUR_COLUMNS, len(samples))),
              "closest": distances.argsort()[:NEIGHBOUR_COLUMNS]}
    for name, path in paths.neighbours.items():
        save_image_grid(neighbour_rows(samples, train, neighbours, chosen[name]), path, nrow=len(chosen[name]))
    return {**stats, "closest_pixel_distances": distances[chosen["closest"]].tolist()}


def write_inception_fid(pipe: VQPriorPipeline, config: Config, paths: RunPaths, n: int) -> dict:
    """Inception FID of the ``fd_image_sets`` against the real val images -> ``report/inception_fid.json``."""
    real, generated = fd_image_sets(pipe, config, paths, n)
    tic = time.perf_counter()
    result = inception_fid(real, generated, pipe.device)
    s = config.sample
    result.update(images=len(real), seconds=round(time.perf_counter() - tic, 1), device=str(pipe.device),
                  weights=f"{PACKAGE}/{WEIGHTS}",
                  sampling={"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p})
    write_json(paths.inception_fid, sources.stamp(result, sources.inception(paths, config, n)))
    return result
