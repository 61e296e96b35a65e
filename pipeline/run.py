"""The whole job: stage 1 -> encode -> stage 2 -> evaluate -> samples -> sample quality -> report.

Training steps are complete when their summary says so (``stage1/summary.json``,
``stage2/summary.json`` at ``stage2.steps``); code files when they match the stage-1
checkpoint; derived files (bits per code, sample grids, quality, report) when the fingerprint
they record matches the run's current checkpoints and settings (``pipeline.sources``). Every
file is written atomically, so ``--resume`` skips exactly what is current, continues an
interrupted training step from its checkpoint, and redoes whatever an earlier step changed,
saying why ("stage-2 checkpoint changed since bits_per_code.json").

Under ``accelerate launch`` every process trains, and only the main one encodes, evaluates,
samples, measures and reports while the others wait.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch

from data import Config, load_split, to_model_range
from data.codes import load_codes
from data.datasets import save_image_grid
from data.provenance import stale_reason
from data.rundir import RunPaths, commit_config, read_summary_steps, run_lock
from data.training import is_main_process, wait_for_everyone
from stage1_vqvae.encode import encode_run
from stage1_vqvae.train import train as train_stage1
from stage2_prior.evaluate import evaluate as evaluate_prior
from stage2_prior.train import train as train_stage2

from . import sources
from .pipeline import PRIORS, VQPriorPipeline
from .quality import write_quality
from .report import write_report

# Distinct generator seeds per use, all derived from run.seed.
SEED_GRIDS, SEED_SWEEP, SEED_CLASSES, SEED_FD = 0, 1, 2, 3


def default_run_dir(config: Config) -> Path:
    return Path(config.run.dir) if config.run.dir else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run(config: Config, run_dir: Path, resume: bool = False) -> dict:
    """Run (or resume) every step of the job in ``run_dir``; returns the report's metrics (main process)."""
    main = is_main_process()
    with run_lock(run_dir, main):
        return _run(config, RunPaths(run_dir), resume, main)


def _run(config: Config, paths: RunPaths, resume: bool, main: bool) -> dict:
    run_dir, timings = paths.root, {}
    say = print if main else (lambda *_: None)

    def step(name: str, why: Optional[str], work: Callable[[], object], everyone: bool = False) -> None:
        """Do ``work`` unless ``why`` is None (current); only the main process unless ``everyone``."""
        if why is None:
            say(f"[{name}] current, skipped")
        else:
            say(f"[{name}] {why}")
            tic = time.perf_counter()
            if everyone or main:
                work()
            timings[name] = round(time.perf_counter() - tic, 1)
        wait_for_everyone()

    stage2_steps = read_summary_steps(paths.stage2_summary)
    step("stage 1: VQ-VAE", None if paths.stage1_summary.is_file() else "training",
         lambda: train_stage1(config, run_dir, resume=paths.stage1_checkpoint.exists()), everyone=True)
    step("encode", "encoding if not up to date", lambda: encode_run(run_dir, "all"))
    step("stage 2: prior", None if stage2_steps == config.stage2.steps else
         ("training" if stage2_steps is None else f"continuing from {stage2_steps} to {config.stage2.steps} steps"),
         lambda: train_stage2(config, run_dir, resume=paths.stage2_checkpoint.exists()), everyone=True)
    if not main:
        return {}
    commit_config(run_dir, config)  # sample settings may have changed on resume
    step("evaluate priors", stale_reason(paths.bits, sources.bits(run_dir)), lambda: evaluate_prior(run_dir))
    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    samples_stale = next((why for grid in sources.sample_grids(run_dir, config)
                          if (why := stale_reason(grid, sources.samples(run_dir, config)))), None)
    step("samples", samples_stale, lambda: write_samples(pipe, config, run_dir))
    step("sample quality", stale_reason(paths.quality, sources.quality(run_dir, config)),
         lambda: measure_quality(pipe, config, run_dir))
    metrics = write_report(run_dir)
    say(f"[report] {paths.report / 'index.html'}  ({', '.join(f'{k} {v}s' for k, v in timings.items())})")
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


def write_samples(pipe: VQPriorPipeline, config: Config, run_dir: Path) -> None:
    """samples/{learned,marginal,uniform}.png, the temperature sweep, and per-class grids when conditional."""
    out, n, seed = RunPaths(run_dir).samples, config.sample.n, config.run.seed * 1000
    stamp = sources.samples(run_dir, config)
    for prior in PRIORS:
        _save_samples(pipe, out / f"{prior}.png", n, prior, config, seed + SEED_GRIDS, stamp)
    for t in config.sample.temperatures:
        _save_samples(pipe, out / f"temperature_{float(t):g}.png", n, "learned", config, seed + SEED_SWEEP, stamp,
                      temperature=float(t))
    for c in range(pipe.num_classes):
        _save_samples(pipe, out / f"class_{c}.png", min(n, 16), "learned", config, seed + SEED_CLASSES, stamp,
                      labels=c)


def measure_quality(pipe: VQPriorPipeline, config: Config, run_dir: Path) -> dict:
    """Fréchet distances of each prior's samples and of decoded val codes to the real val images.

    The priors are sampled as their grids are (``sample.temperature``, ``top_k``, ``top_p``), and
    the learned prior also at every temperature of the sweep (``fd_learned_T<t>``). Every set has
    the same size (``sample.fd_samples``, at most the val split), since the Fréchet distance is
    biased by sample size.
    """
    s, seed = config.sample, config.run.seed * 1000 + SEED_FD
    stamp = sources.quality(run_dir, config)
    real = to_model_range(load_split(config.data, "val").images[:s.fd_samples])
    n = len(real)
    val_codes, _, _ = load_codes(RunPaths(run_dir).codes("val"), split="val")
    generated = {"reconstructions": pipe.decode(val_codes[:n])}
    for prior in PRIORS:
        generated[prior] = pipe(n, prior, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, seed=seed).images
    for t in s.temperatures:
        generated[f"learned_T{float(t):g}"] = pipe(n, "learned", temperature=float(t), top_k=s.top_k, top_p=s.top_p,
                                                   seed=seed).images
    return write_quality(run_dir, config, real, generated, device=pipe.device, computed_from=stamp)
