"""``vqprior compare``: finished runs side by side, as one HTML page and one Markdown table.

    compare(["runs/a", "runs/b"], "compare/ab")    # -> compare/ab/compare.html, compare/ab/compare.md

It reads each run as the report does (``pipeline.results.read_run``: every file present, none
out of date) and takes the report's numbers (``pipeline.metrics.build_metrics``); it never
loads a model or recomputes a number. A run that is unfinished or stale is refused, all such runs
named in one line. The page shows the settings in which the runs differ, one row of numbers per
run, and each run's learned samples next to the others'.
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template
from importlib.resources import files

from data.errors import UserError
from data.io import write_text
from data.rundir import RunPaths

from .html import esc, figures, num, style, table
from .metrics import build_metrics
from .results import read_run

IGNORED = {"run.dir"}  # where a run lives is not a difference between runs
COLUMNS = ("run", "prior", "bits/code learned val (train)", "marginal", "uniform", "bits/dim learned",
           "FD learned / perfect prior", "Inception FID learned", "copies", "codes used", "parameters s1 / s2",
           "training s1 / s2 (s)", "images/s sampled")


def compare(runs: list[str | os.PathLike], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out/compare.html`` and ``out/compare.md`` for the finished ``runs``; returns their paths."""
    if len(runs) < 1:
        raise UserError("compare needs at least one run directory")
    names = run_names([Path(r) for r in runs])
    metrics, files_ = read_runs([Path(r) for r in runs])
    differ = differences([f.config.to_dict() for f in files_])
    rows = [summary_row(name, f, m) for name, f, m in zip(names, files_, metrics)]
    out = Path(out)
    markdown = markdown_page(names, rows, differ)
    html = html_page(names, rows, differ, files_)
    write_text(out / "compare.md", markdown)
    write_text(out / "compare.html", html)
    return out / "compare.html", out / "compare.md"


def run_names(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a folder name."""
    names = [r.name or str(r) for r in runs]
    return [str(r) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def read_runs(runs: list[Path]) -> tuple[list[dict], list]:
    """(metrics, parsed files) of every run; every run that cannot be compared named in one UserError."""
    problems, parsed = [], []
    for run in runs:
        try:
            parsed.append(read_run(RunPaths(run)))
        except UserError as exc:
            problems.append(f"{run}: {str(exc).splitlines()[0]}")
    if problems:
        raise UserError("cannot compare runs that are unfinished or out of date (resuming each run brings it "
                        f"up to date): {'; '.join(problems)}")
    return [build_metrics(f) for f in parsed], parsed


def flatten(config: dict, prefix: str = "") -> dict:
    """{"stage2.hidden": 64, ...} from the nested config dict."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(configs: list[dict]) -> dict[str, list]:
    """{dotted key: [value per run]} for every setting whose value is not the same in all runs."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat) - IGNORED)
    return {k: [f.get(k) for f in flat] for k in keys if len({repr(f.get(k)) for f in flat}) > 1}


def summary_row(name: str, f, m: dict) -> list[str]:
    """One run's numbers, in the order of ``COLUMNS``."""
    bits, quality, s1, s2 = m["bits_per_code"], m["sample_quality"], m["stage1"], m["stage2"]
    bpd = m.get("bits_per_dim") or {}
    novelty = m.get("novelty") or {}
    speed = f.quality.get("learned_sampling") or {}
    ratio = quality.get("fd_learned_over_perfect_prior")
    return [
        name,
        f.config.stage2.architecture,
        f"{bits['learned']:.3f} ({num(bits.get('learned_train'), 3)})",
        f"{bits['marginal']:.3f}",
        f"{bits['uniform']:.3f}",
        num(bpd.get("learned"), 3),
        f"{quality['fd_learned']:.2f} / {quality['fd_perfect_prior']:.2f} = {num(ratio, 2)}x",
        num(quality.get("fid_inception_learned"), 1),
        num(novelty.get("copy_fraction"), 3),
        f"{s1['codes_used']} / {m['num_embeddings']}",
        f"{count(f.stage1.get('parameters'))} / {count(s2.get('parameters'))}",
        f"{num(s1.get('train_seconds'), 0)} / {num(s2.get('train_seconds'), 0)}",
        num(speed.get("images_per_s"), 1),
    ]


def count(value) -> str:
    """An integer with thousands separators, or a dash when the run did not record it."""
    return "–" if value is None else f"{value:,}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def difference_rows(names: list[str], differ: dict[str, list]) -> tuple[list[str], list[list]]:
    return ["setting", *names], [[key, *values] for key, values in differ.items()]


def markdown_page(names: list[str], rows: list[list], differ: dict[str, list]) -> str:
    parts = ["# Runs compared", "", markdown_table(list(COLUMNS), rows), ""]
    if differ:
        parts += ["Settings that differ:", "", markdown_table(*difference_rows(names, differ)), ""]
    else:
        parts += ["The runs' settings are the same.", ""]
    return "\n".join(parts)


def html_page(names: list[str], rows: list[list], differ: dict[str, list], files_) -> str:
    template = Template((files("pipeline") / "templates" / "compare.html").read_text(encoding="utf-8"))
    samples = [(name, f.paths.sample_grid("learned")) for name, f in zip(names, files_)]
    return template.substitute(
        style=style(),
        count=len(names),
        numbers=f"<div class='runs'>{table(list(COLUMNS), rows)}</div>",
        settings=table(*difference_rows(names, differ)) if differ else "<p>The runs' settings are the same.</p>",
        samples=figures(samples, 260),
        runs="".join(f"<li><code>{esc(f.paths.root.resolve())}</code></li>" for f in files_),
    )
