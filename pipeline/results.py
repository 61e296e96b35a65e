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
# Every input the report needs, and the command that makes it (DIR is replaced by the run directory).
REQUIRED = {
    "config.yaml": STAGE1_TRAIN,
    "stage1/metrics.jsonl": STAGE1_TRAIN,
    "stage1/summary.json": STAGE1_TRAIN,
    "stage1/reconstructions.png": STAGE1_TRAIN,
    "stage2/metrics.jsonl": "python -m stage2_prior train --run DIR",
    "stage2/bits_per_code.json": "python -m stage2_prior evaluate --run DIR",
    "samples/learned.png": SAMPLES,
    "samples/marginal.png": SAMPLES,
    "samples/uniform.png": SAMPLES,
    "report/quality.json": SAMPLES,
}


@dataclass
class RunFiles:
    """Everything the report reads from a run directory, parsed."""
    run: Path
    config: Config
    stage1_rows: list[dict]
    stage1: dict  # stage1/summary.json; its optional "class_names" names the classes of labelled data
    stage2_rows: list[dict]
    stage2: dict  # stage2/summary.json when present (timings, size, grid), else {}
    bits: dict
    quality: dict
    temperatures: list[tuple[float, Path]]  # the sweep's grids that exist
    classes: list[tuple[int, Path]]  # per-class grids that exist
    inception: dict | None = None  # report/inception_fid.json when present and current
    inception_stale: str | None = None  # why a present report/inception_fid.json was left out
    neighbours: dict | None = None  # {"typical", "closest"}: the nearest-training-image pictures that exist


def read_run(run: Path) -> RunFiles:
    """Check that every required input exists, then read and cross-check them."""
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    for name, command in REQUIRED.items():
        if not (run / name).is_file():
            raise UserError(f"{run / name} is missing; make it with `{command.replace('DIR', str(run))}`")
    config = load_config(run / "config.yaml")
    stale = sources.stale_parts(run, config)
    if stale:
        path, why = stale[0]
        raise UserError(f"{path} is out of date ({why}); refresh it with "
                        f"`python -m pipeline run --run {run} --resume`, then write the report")
    stage1 = read_json(run / "stage1/summary.json",
                       ("val_recon_nmse", "perplexity", "codes_used", "num_embeddings", "code_counts"))
    bits = read_json(run / "stage2/bits_per_code.json", (*PRIORS, "num_embeddings"))
    quality = read_json(run / "report/quality.json",
                        ("fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform"))
    if not stage1["num_embeddings"] == bits["num_embeddings"] == len(stage1["code_counts"]):
        raise UserError(f"{run / 'stage2/bits_per_code.json'} is for K={bits['num_embeddings']} codes but "
                        f"{run / 'stage1/summary.json'} for K={stage1['num_embeddings']}: stage 2 is out of date; "
                        f"re-run `python -m stage2_prior train --run {run}` and `evaluate`")
    stage2 = read_json(run / "stage2/summary.json", ()) if (run / "stage2/summary.json").is_file() else {}
    inception, inception_stale = read_inception(run, config)
    neighbours = {k: p for k, p in RunPaths(run).neighbours.items() if p.is_file()}
    return RunFiles(run, config, read_jsonl(run / "stage1/metrics.jsonl"), stage1,
                    read_jsonl(run / "stage2/metrics.jsonl"), stage2, bits, quality,
                    temperature_grids(run, config.sample.temperatures), class_grids(run),
                    inception, inception_stale, neighbours if "novelty" in quality else None)


def read_inception(run: Path, config: Config) -> tuple[dict | None, str | None]:
    """(report/inception_fid.json, None) when present and current; (None, why) when out of date; else (None, None).

    It is optional (``sample.inception_fid``, ``python -m pipeline fid``), so a stale one is left
    out of the report with a note rather than refused.
    """
    path = RunPaths(run).inception_fid
    if not path.is_file():
        return None, None
    n = (recorded(path) or {}).get("settings", {}).get("n")
    why = stale_reason(path, sources.inception(run, config, n))
    if why:
        return None, f"{why}; refresh it with `python -m pipeline fid --run {run}`"
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


def temperature_grids(run: Path, temperatures: list) -> list[tuple[float, Path]]:
    """``samples/temperature_<T>.png`` for each configured T that exists (T as ``str(float(T))`` or ``%g``)."""
    found = []
    for t in temperatures:
        for name in (f"temperature_{float(t)}.png", f"temperature_{float(t):g}.png"):
            if (run / "samples" / name).is_file():
                found.append((float(t), run / "samples" / name))
                break
    return found


def class_grids(run: Path) -> list[tuple[int, Path]]:
    """``samples/class_<c>.png`` grids of a conditional prior, by class index."""
    grids = [(p.stem.removeprefix("class_"), p) for p in (run / "samples").glob("class_*.png")]
    return sorted((int(c), p) for c, p in grids if c.isdigit())
