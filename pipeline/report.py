"""The prior study report: ``metrics.json``, the plots and ``index.html`` of a finished run (``RunPaths.report``).

``write_report(run_dir, config)`` only reads files of the run directory, so it can be re-run at any time
without touching a model: read the run (``results``) -> compute the numbers (``metrics``) ->
draw the curves (``plots``) -> write one self-contained page (``html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data.config import Config
from data.io import write_json, write_text
from data.provenance import KEY, fingerprint
from data.rundir import RunPaths

from .html import render_html
from .metrics import build_metrics
from .plots import plot_bits_per_dim, plot_codebook_usage, plot_stage1_curves, plot_stage2_curves
from .results import RunFiles, read_run, required

__all__ = ["write_report"]


def write_report(run_dir: str | Path, config: Optional[Config] = None) -> dict:
    """Write the run's ``metrics.json``, the plots and ``index.html``; return the metrics.

    ``config`` is the run's (its saved one when not given).
    """
    files = read_run(RunPaths(run_dir), config)
    metrics = build_metrics(files)
    paths = files.paths
    plots = {
        "stage1_curves": plot_stage1_curves(files.stage1_rows, paths.plot("stage1_curves")),
        "codebook_usage": plot_codebook_usage(files.stage1["code_counts"], paths.plot("codebook_usage")),
        "stage2_curves": plot_stage2_curves(files.stage2_rows, files.bits, paths.plot("stage2_curves")),
    }
    if metrics["bits_per_dim"]:
        plots["bits_per_dim"] = plot_bits_per_dim(metrics["bits_per_dim"], paths.plot("bits_per_dim"))
    metrics[KEY] = fingerprint(paths, shown_files(files))
    page = render_html(files, metrics, plots)
    write_json(paths.metrics, metrics)
    write_text(paths.index, page)
    return metrics


def shown_files(files: RunFiles) -> list[Path]:
    """Every run file the report shows or summarises."""
    paths = files.paths
    grids = [p for _, p in files.temperatures] + [p for _, p in files.classes]
    grids += list((files.neighbours or {}).values())
    grids += [paths.inception_fid] if files.inception else []
    return [*required(paths), paths.stage2_summary, *grids, paths.stage1_checkpoint, paths.stage2_checkpoint]
