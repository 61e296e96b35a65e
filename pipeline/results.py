"""Reading a finished run directory: every input the report needs, checked and parsed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from data.config import Config
from data.cli import command_for
from data.errors import Fix, MissingFile, OutOfDate, UserError
from data.io import read_jsonl
from data.provenance import recorded, stale_reason
from data.rundir import RunPaths, run_config
from stage2_prior import PRIORS

from . import sources

# The Fréchet distances quality.json must hold: the three priors', then the references they are read
# against (a perfect prior's decoded training grids, real training images, decoded val codes).
FD_KEYS = ("fd_learned", "fd_marginal", "fd_uniform", "fd_perfect_prior", "fd_train_images", "fd_reconstructions")


def required(paths: RunPaths) -> dict[Path, Fix]:
    """Every input the report needs, and the step that makes it."""
    return {
        paths.config: Fix.TRAIN_STAGE1,
        paths.stage1_metrics: Fix.TRAIN_STAGE1,
        paths.stage1_summary: Fix.TRAIN_STAGE1,
        paths.reconstructions: Fix.TRAIN_STAGE1,
        paths.stage2_metrics: Fix.TRAIN_STAGE2,
        paths.bits: Fix.EVALUATE,
        **{paths.sample_grid(prior): Fix.RESUME for prior in PRIORS},
        paths.quality: Fix.RESUME,
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


def read_run(paths: RunPaths, config: Optional[Config] = None) -> RunFiles:
    """Check that every required input exists, then read and cross-check them (``config``: the run's,
    its saved one when not given)."""
    run = paths.root
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    for path, fix in required(paths).items():
        if not path.is_file():
            raise MissingFile(f"{path} is missing", path=path, fix=fix, run=run)
    config = config or run_config(paths)
    stale = sources.stale_parts(paths, config)
    if stale:
        path, why = stale[0]
        raise OutOfDate(f"{path} is out of date ({why})", path=path, fix=Fix.RESUME, run=run)
    stage1 = read_json(paths.stage1_summary,
                       ("val_recon_nmse", "perplexity", "codes_used", "num_embeddings", "code_counts"))
    bits = read_json(paths.bits, (*PRIORS, "num_embeddings"))
    quality = read_json(paths.quality, FD_KEYS)
    if not stage1["num_embeddings"] == bits["num_embeddings"] == len(stage1["code_counts"]):
        raise OutOfDate(f"{paths.bits} is for K={bits['num_embeddings']} codes but "
                        f"{paths.stage1_summary} for K={stage1['num_embeddings']}: stage 2 is out of date",
                        path=paths.bits, fix=Fix.TRAIN_STAGE2, run=run)
    stage2 = read_json(paths.stage2_summary, ()) if paths.stage2_summary.is_file() else {}
    inception, inception_stale = read_inception(paths, config)
    neighbours = {k: p for k, p in paths.neighbours.items() if p.is_file()}
    return RunFiles(paths, config, read_jsonl(paths.stage1_metrics), stage1,
                    read_jsonl(paths.stage2_metrics), stage2, bits, quality,
                    paths.temperature_grids(config.sample.sweep), paths.class_grids(),
                    inception, inception_stale, neighbours if "novelty" in quality else None)


def read_inception(paths: RunPaths, config: Config) -> tuple[dict | None, str | None]:
    """(Inception FID file, None) when present and current; (None, why) when out of date; else (None, None).

    It is optional (``sample.inception_fid``, or measured on its own), so a stale one is left out
    of the report with a note, naming the command that refreshes it, rather than refused.
    """
    path = paths.inception_fid
    if not path.is_file():
        return None, None
    n = (recorded(path) or {}).get("settings", {}).get("n")
    why = stale_reason(path, sources.inception(paths, config, n))
    if why:
        return None, f"{why}; {Fix.FID.value}: `{command_for(Fix.FID, paths.root, console=True)}`"
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
