"""The prior study report: ``DIR/report/metrics.json``, the plots and ``DIR/report/index.html`` of a finished run.

``write_report(run_dir)`` only reads files of the run directory, so it can be re-run at any time
without touching a model: read the run (``results``) -> compute the numbers (``metrics``) ->
draw the curves (``plots``) -> write one self-contained page (``html``).
"""

from __future__ import annotations

from pathlib import Path

from data.io import write_json, write_text
from data.provenance import KEY, fingerprint

from .html import render_html
from .metrics import build_metrics
from .plots import plot_bits_per_dim, plot_codebook_usage, plot_stage1_curves, plot_stage2_curves
from .results import REQUIRED, RunFiles, read_run

__all__ = ["REQUIRED", "write_report"]


def write_report(run_dir: str | Path) -> dict:
    """Write ``DIR/report/metrics.json``, the plots and ``DIR/report/index.html``; return the metrics."""
    files = read_run(Path(run_dir))
    metrics = build_metrics(files)
    out = files.run / "report"
    plots = {
        "stage1_curves.png": plot_stage1_curves(files.stage1_rows, out / "stage1_curves.png"),
        "codebook_usage.png": plot_codebook_usage(files.stage1["code_counts"], out / "codebook_usage.png"),
        "stage2_curves.png": plot_stage2_curves(files.stage2_rows, files.bits, out / "stage2_curves.png"),
    }
    if metrics["bits_per_dim"]:
        plots["bits_per_dim.png"] = plot_bits_per_dim(metrics["bits_per_dim"], out / "bits_per_dim.png")
    metrics[KEY] = fingerprint(files.run, shown_files(files))
    page = render_html(files, metrics, plots)
    write_json(out / "metrics.json", metrics)
    write_text(out / "index.html", page)
    return metrics


def shown_files(files: RunFiles) -> list[str]:
    """Every run file the report shows or summarises, relative to the run directory."""
    grids = [p for _, p in files.temperatures] + [p for _, p in files.classes]
    grids += list((files.neighbours or {}).values())
    grids += [files.run / "report/inception_fid.json"] if files.inception else []
    shown = [*REQUIRED, "stage2/summary.json", *(str(p.relative_to(files.run)) for p in grids)]
    return [*shown, "stage1/checkpoint.pt", "stage2/checkpoint.pt"]
