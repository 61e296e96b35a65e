"""The whole job: stage 1 -> encode -> stage 2 -> evaluate -> samples -> sample quality -> report.

Each step leaves a file that marks it complete (``stage1/summary.json``, ``codes/*.h5``,
``stage2/summary.json``, ``stage2/bits_per_code.json``, the sample PNGs, ``report/quality.json``),
and every file is written atomically. ``--resume`` therefore skips what is complete, continues
the interrupted step from its checkpoint, and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import torch

from data import Config, load_split, save_config, to_model_range
from data.codes import load_codes
from data.datasets import save_image_grid
from data.training import is_main_process, prepare_run_dir
from stage1_vqvae.encode import encode_run
from stage1_vqvae.train import train as train_stage1
from stage2_prior.evaluate import evaluate as evaluate_prior
from stage2_prior.train import train as train_stage2

from .pipeline import PRIORS, VQPriorPipeline
from .quality import write_quality
from .report import write_report

# Distinct generator seeds per use, all derived from run.seed.
SEED_GRIDS, SEED_SWEEP, SEED_CLASSES, SEED_FD = 0, 1, 2, 3


def default_run_dir(config: Config) -> Path:
    return Path(config.run.dir) if config.run.dir else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run(config: Config, run_dir: Path, resume: bool = False) -> dict:
    """Run (or resume) every step of the job in ``run_dir``; returns the report's metrics."""
    prepare_run_dir(run_dir, run_dir, resume)
    if is_main_process():
        save_config(config, run_dir / "config.yaml")
    timings = {}

    def step(name: str, done: bool, work) -> None:
        if done:
            print(f"[{name}] complete, skipped")
            return
        print(f"[{name}]")
        tic = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - tic, 1)

    stage1_ckpt = run_dir / "stage1" / "checkpoint.pt"
    stage2_ckpt = run_dir / "stage2" / "checkpoint.pt"
    step("stage 1: VQ-VAE", (run_dir / "stage1" / "summary.json").exists(),
         lambda: train_stage1(config, run_dir, resume=stage1_ckpt.exists()))
    step("encode", False, lambda: encode_run(run_dir, "all"))  # skips files that are up to date
    step("stage 2: prior", (run_dir / "stage2" / "summary.json").exists(),
         lambda: train_stage2(run_dir, resume=stage2_ckpt.exists()))
    step("evaluate priors", (run_dir / "stage2" / "bits_per_code.json").exists(), lambda: evaluate_prior(run_dir))

    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    step("samples", False, lambda: write_samples(pipe, config, run_dir))
    step("sample quality", (run_dir / "report" / "quality.json").exists(),
         lambda: measure_quality(pipe, config, run_dir))
    metrics = write_report(run_dir)
    print(f"[report] {run_dir / 'report' / 'index.html'}  ({', '.join(f'{k} {v}s' for k, v in timings.items())})")
    return metrics


def _save_samples(pipe: VQPriorPipeline, path: Path, n: int, prior: str, config: Config, seed: int,
                  temperature: Optional[float] = None, labels=None) -> None:
    """One PNG grid of ``n`` samples; an existing file (from an interrupted run) is kept."""
    if path.exists():
        return
    s = config.sample
    out = pipe(n, prior, temperature=s.temperature if temperature is None else temperature, top_k=s.top_k,
               labels=labels, seed=seed)
    save_image_grid(out.images, path, nrow=grid_columns(n))


def grid_columns(n: int) -> int:
    """Columns of a roughly square sample grid (at most 16)."""
    return max(1, min(16, round(n ** 0.5)))


def write_samples(pipe: VQPriorPipeline, config: Config, run_dir: Path) -> None:
    """samples/{learned,marginal,uniform}.png, the temperature sweep, and per-class grids when conditional."""
    out, n, seed = run_dir / "samples", config.sample.n, config.run.seed * 1000
    for prior in PRIORS:
        _save_samples(pipe, out / f"{prior}.png", n, prior, config, seed + SEED_GRIDS)
    for t in config.sample.temperatures:
        _save_samples(pipe, out / f"temperature_{float(t):g}.png", n, "learned", config, seed + SEED_SWEEP,
                      temperature=float(t))
    for c in range(pipe.num_classes):
        _save_samples(pipe, out / f"class_{c}.png", min(n, 16), "learned", config, seed + SEED_CLASSES, labels=c)


def measure_quality(pipe: VQPriorPipeline, config: Config, run_dir: Path) -> dict:
    """Fréchet distances of each prior's samples and of decoded val codes to the real val images.

    Every set has the same size (``sample.fd_samples``, at most the val split), since the
    Fréchet distance is biased by sample size.
    """
    n = config.sample.fd_samples
    real = to_model_range(load_split(config.data, "val").images[:n])
    n = len(real)
    val_codes, _, _ = load_codes(run_dir / "codes" / "val.h5")
    generated = {"reconstructions": pipe.decode(val_codes[:n])}
    for prior in PRIORS:
        codes = pipe.sample_codes(n, prior, temperature=1.0, seed=config.run.seed * 1000 + SEED_FD)
        generated[prior] = pipe.decode(codes)
    return write_quality(run_dir, config, real, generated, device=pipe.device)
