"""What each derived file of a run is computed from (``data.provenance`` fingerprints).

    bits_per_code.json   the stage-2 checkpoint and the val codes
    samples/*.png        both checkpoints and the sampling settings
    report/quality.json  both checkpoints, the val codes, the feature classifier's settings and
                         the sampling settings the Fréchet distances use (also the novelty pictures)
    report/inception_fid.json  both checkpoints, the val codes, the sampling settings and the
                         number of images per set

``stale_parts`` lists the report's inputs that no longer match the run's models, with the
reason for each; resuming the whole run redoes exactly those steps.
"""

from __future__ import annotations

import json
from pathlib import Path

from data.config import Config
from data.provenance import KEY, fingerprint, stale_reason
from data.rundir import RunPaths
from stage2_prior import PRIORS
from stage2_prior.evaluate import bits_inputs


def bits(paths: RunPaths) -> dict:
    return fingerprint(paths, bits_inputs(paths))


def sampling_settings(config: Config) -> dict:
    s = config.sample
    return {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "seed": config.run.seed}


def samples(paths: RunPaths, config: Config) -> dict:
    settings = {**sampling_settings(config), "n": config.sample.n, "temperatures": config.sample.temperatures}
    return fingerprint(paths, [paths.stage1_checkpoint, paths.stage2_checkpoint], settings)


def quality(paths: RunPaths, config: Config) -> dict:
    from .classifier import classifier_settings

    settings = {**sampling_settings(config), "fd_samples": config.sample.fd_samples, "fd_draws": config.sample.fd_draws,
                "temperatures": config.sample.temperatures, "classifier": classifier_settings(config)}
    return fingerprint(paths, [paths.stage1_checkpoint, paths.stage2_checkpoint, paths.codes("train"),
                               paths.codes("val")], settings)


def inception(paths: RunPaths, config: Config, n: int) -> dict:
    """What ``report/inception_fid.json`` is computed from, for ``n`` images per set."""
    settings = {**sampling_settings(config), "n": n}
    return fingerprint(paths, [paths.stage1_checkpoint, paths.stage2_checkpoint, paths.codes("val")], settings)


def sample_grids(paths: RunPaths, config: Config) -> list[Path]:
    """The grids a whole run draws: one per prior and the temperature sweep."""
    return [*map(paths.sample_grid, PRIORS), *map(paths.temperature_grid, config.sample.sweep)]


def stale_parts(paths: RunPaths, config: Config) -> list[tuple[Path, str]]:
    """(file, why) for every derived report input that does not describe the run's current models.

    The three prior grids must exist; the sweep's and per-class grids are checked when present
    (the report leaves out those that are not).
    """
    grids = [*sample_grids(paths, config), *(path for _, path in paths.class_grids())]
    checks = [(paths.bits, bits(paths)), (paths.quality, quality(paths, config))]
    checks += [(grid, samples(paths, config)) for grid in grids if grid.exists() or grid.stem in PRIORS]
    return [(path, why) for path, expected in checks if (why := stale_reason(path, expected))]


def stamp(obj: dict, sources: dict) -> dict:
    """``obj`` with its fingerprint under ``computed_from`` (for JSON outputs)."""
    return {**obj, KEY: sources}


def png_text(sources: dict) -> dict:
    """The PNG text chunk that records a grid's fingerprint."""
    return {KEY: json.dumps(sources, sort_keys=True)}
