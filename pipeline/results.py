"""Reading a finished run directory: every input the report needs, checked and parsed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from data.config import Config, load_config
from data.errors import UserError
from data.io import read_jsonl
from data.provenance import recorded, stale_reason
from data.rundir import RunPaths
from stage2_prior import PRIORS

from . import sources

STAGE1_TRAIN = "python -m stage1_vqvae train --config FILE --run DIR"
SAMPLES = "python -m pipeline run --run DIR --resume"


def required(paths: RunPaths) -> dict[Path, str]:
    """Every input the report needs, and the command that makes it (DIR stands for the run directory)."""
    return {
        paths.config: STAGE1_TRAIN,
        paths.stage1_metrics: STAGE1_TRAIN,
        paths.stage1_summary: STAGE1_TRAIN,
        paths.reconstructions: STAGE1_TRAIN,
        paths.stage2_metrics: "python -m stage2_prior train --run DIR",
        paths.bits: "python -m stage2_prior evaluate --run DIR",
        **{paths.sample_grid(prior): SAMPLES for prior in PRIORS},
        paths.quality: SAMPLES,
    }


@dataclass
class RunFiles:
    """Everything the report reads from a run directory, parsed."""
    paths: RunPaths
    config: Config
    stage1_rows: list[dict]
    stage1: dict  # the stage-1 summary; its optional "class_names" names the classes of labelled data
    stage2_rows: list[dict]
    stage2: dict  # the stage-2 summary when present (timings, size, grid), else {}
    bits: dict
    quality: dict
    temperatures: list[tuple[float, Path]]  # the sweep's grids that exist
    classes: list[tuple[int, Path]]  # per-class grids that exist
    inception: dict | None = None  # the Inception FID file when present and current
    inception_stale: str | None = None  # why a present Inception FID file was left out
    neighbours: dict | None = None  # {"typical", "closest"}: the nearest-training-image pictures that exist


def read_run(paths: RunPaths) -> RunFiles:
    """Check that every required input exists, then read and cross-check them."""
    run = paths.root
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    for path, command in required(paths).items():
        if not path.is_file():
            raise UserError(f"{path} is missing; make it with `{command.replace('DIR', str(run))}`")
    config = load_config(paths.config)
    stale = sources.stale_parts(paths, config)
    if stale:
        path, why = stale[0]
        raise UserError(f"{path} is out of date ({why}); refresh it with "
                        f"`python -m pipeline run --run {run} --resume`, then write the report")
    stage1 = read_json(paths.stage1_summary,
                       ("val_recon_nmse", "perplexity", "codes_used", "num_embeddings", "code_counts"))
    bits = read_json(paths.bits, (*PRIORS, "num_embeddings"))
    quality = read_json(paths.quality, ("fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform"))
    if not stage1["num_embeddings"] == bits["num_embeddings"] == len(stage1["code_counts"]):
        raise UserError(f"{paths.bits} is for K={bits['num_embeddings']} codes but "
                        f"{paths.stage1_summary} for K={stage1['num_embeddings']}: stage 2 is out of date; "
                        f"re-run `python -m stage2_prior train --run {run}` and `evaluate`")
    stage2 = read_json(paths.stage2_summary, ()) if paths.stage2_summary.is_file() else {}
    inception, inception_stale = read_inception(paths, config)
    neighbours = {k: p for k, p in paths.neighbours.items() if p.is_file()}
    return RunFiles(paths, config, read_jsonl(paths.stage1_metrics), stage1,
                    read_jsonl(paths.stage2_metrics), stage2, bits, quality,
                    paths.temperature_grids(config.sample.temperatures), paths.class_grids(),
                    inception, inception_stale, neighbours if "novelty" in quality else None)


def read_inception(paths: RunPaths, config: Config) -> tuple[dict | None, str | None]:
    """(Inception FID file, None) when present and current; (None, why) when out of date; else (None, None).

    It is optional (``sample.inception_fid``, ``python -m pipeline fid``), so a stale one is left
    out of the report with a note rather than refused.
    """
    path = paths.inception_fid
    if not path.is_file():
        return None, None
    n = (recorded(path) or {}).get("settings", {}).get("n")
    why = stale_reason(path, sources.inception(paths, config, n))
    if why:
        return None, f"{why}; refresh it with `python -m pipeline fid --run {paths.root}`"
    return read_json(path, tuple(f"fid_inception_{k}" for k in ("reconstructions", *PRIORS))), None


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object holding ``keys``, each a finite number (or a list of them); else a UserError naming it."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; delete it and re-run the step that writes it") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is from another version, "
                        "re-run the step that writes it")
    wrong = [k for k in keys if not all(map(is_number, obj[k] if isinstance(obj[k], list) else [obj[k]]))]
    if wrong:
        raise UserError(f"{path}: {', '.join(wrong)} must be numbers; the file is damaged, "
                        "re-run the step that writes it")
    return obj


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
