"""The report's matplotlib figures, each saved atomically as a PNG (``DIR/report/*.png``)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from data.io import atomic_path
from stage2_prior import PRIORS


def series(rows: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the rows that have a step and a non-null ``key``."""
    pairs = [(row["step"], row[key]) for row in rows if row.get(key) is not None and "step" in row]
    return [s for s, _ in pairs], [v for _, v in pairs]


def spans_decades(values: list) -> bool:
    """Whether positive values cover more than a factor of 10: then a log axis reads better."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def save_figure(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def plot_stage1_curves(rows: list[dict], path: Path) -> Path:
    """Loss, reconstruction NMSE and codebook perplexity against the step (train line, val dots)."""
    fig = Figure(figsize=(12, 3.2))
    panels = (("loss", "training loss"), ("recon_nmse", "reconstruction NMSE"), ("perplexity", "codebook perplexity"))
    for ax, (key, title) in zip(fig.subplots(1, 3), panels):
        ax.plot(*series(rows, key), color="tab:blue", label="train batch")
        steps, values = series(rows, f"val_{key}")
        if steps:
            ax.plot(steps, values, "o-", color="tab:orange", label="val set")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key in ("loss", "recon_nmse") and spans_decades(series(rows, key)[1]):
            ax.set_yscale("log")
        ax.legend(frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_codebook_usage(counts: list[int], path: Path) -> Path:
    """How often each code occurs in the val set's code grids, most used first."""
    ordered = sorted(counts, reverse=True)
    total = sum(ordered) or 1
    used = sum(c > 0 for c in ordered)
    fig = Figure(figsize=(12, 3))
    ax = fig.subplots()
    ax.bar(range(len(ordered)), [100 * c / total for c in ordered], width=1.0, color="tab:blue")
    ax.axhline(100 / len(ordered), color="gray", ls="--", lw=1, label="uniform use (1/K)")
    ax.set_xlim(-0.5, len(ordered) - 0.5)
    ax.set_xlabel("codes, most used first")
    ax.set_ylabel("% of val code positions")
    ax.set_title(f"codebook usage: {used} of {len(ordered)} codes used on the val set")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_stage2_curves(rows: list[dict], bits: dict, path: Path) -> Path:
    """The prior's train and val bits per code against the step, with the two baselines as lines."""
    fig = Figure(figsize=(12, 3.2))
    ax = fig.subplots()
    ax.plot(*series(rows, "train_bits_per_code"), color="tab:blue", label="learned prior, train batch")
    steps, values = series(rows, "val_bits_per_code")
    if steps:
        ax.plot(steps, values, "o-", color="tab:orange", label="learned prior, val set")
    ax.axhline(bits["marginal"], color="tab:green", ls="--", label=f"marginal prior ({bits['marginal']:.2f})")
    ax.axhline(bits["uniform"], color="gray", ls=":", label=f"uniform prior ({bits['uniform']:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per code")
    ax.set_title("stage 2: bits per code")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_bits_per_dim(bpd: dict, path: Path) -> Path:
    """One stacked bar per prior: the shared distortion -log2 p(x | z) below, the prior's rate -log2 p(z) above."""
    distortion = bpd["distortion"]
    rates = [bpd[p] - distortion for p in PRIORS]
    fig = Figure(figsize=(7, 3.4))
    ax = fig.subplots()
    ax.bar(PRIORS, [distortion] * len(PRIORS), color="tab:gray", label="distortion (stage-1 decoder)")
    ax.bar(PRIORS, rates, bottom=distortion, color="tab:blue", label="rate (prior's code length)")
    for i, p in enumerate(PRIORS):
        ax.text(i, bpd[p], f"{bpd[p]:.3f}", ha="center", va="bottom")
    ax.set_ylim(0, max(bpd[p] for p in PRIORS) * 1.15)
    ax.set_ylabel("bits per dimension")
    ax.set_title("negative ELBO on the val images (upper bound on -log2 p(x))")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
