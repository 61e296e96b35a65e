"""The prior study report: ``DIR/report/metrics.json`` and ``DIR/report/index.html`` from a finished run.

``write_report(run_dir)`` only reads files of the run directory (config, both stages'
metrics and summaries, sample grids, ``report/quality.json``), so it can be re-run at any
time without touching a model. It draws the stage-1 and stage-2 curves and the codebook
usage with matplotlib into ``DIR/report/*.png`` and writes one self-contained HTML page:
every image is inlined as base64, so the page renders offline and survives being copied
away from the run directory.

The numbers compared (see SPEC.md):

* bits per code: mean -log2 p(code) of the held-out codes under the learned PixelCNN prior,
  the marginal prior (independent codes with the training frequencies) and the uniform prior
  (log2 K); the ratio to uniform is the share of the uniform prior's code length still needed;
* Fréchet distance (pipeline/quality.py) of decoded samples of each prior to real val images,
  with the decoded val codes (stage-1 reconstructions) as the floor a perfect prior reaches.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from data.config import Config, load_config
from data.datasets import FASHION_MNIST_CLASSES
from data.errors import UserError
from data.io import atomic_path, read_jsonl, write_json, write_text

PRIORS = ("learned", "marginal", "uniform")
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
CLASS_NAMES = {
    "fashion_mnist_embedded": FASHION_MNIST_CLASSES,
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


@dataclass
class RunFiles:
    """Everything the report reads from a run directory, parsed."""
    run: Path
    config: Config
    stage1_rows: list[dict]
    stage1: dict
    stage2_rows: list[dict]
    stage2: dict  # stage2/summary.json when present (timings, size, grid), else {}
    bits: dict
    quality: dict
    temperatures: list[tuple[float, Path]]  # the sweep's grids that exist
    classes: list[tuple[int, Path]]  # per-class grids that exist


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
    page = render_html(files, metrics, plots)
    write_json(out / "metrics.json", metrics)
    write_text(out / "index.html", page)
    return metrics


# ---------------------------------------------------------------- reading the run directory


def read_run(run: Path) -> RunFiles:
    """Check that every required input exists, then read and cross-check them."""
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    for name, command in REQUIRED.items():
        if not (run / name).is_file():
            raise UserError(f"{run / name} is missing; make it with `{command.replace('DIR', str(run))}`")
    config = load_config(run / "config.yaml")
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
    return RunFiles(run, config, read_jsonl(run / "stage1/metrics.jsonl"), stage1,
                    read_jsonl(run / "stage2/metrics.jsonl"), stage2, bits, quality,
                    temperature_grids(run, config.sample.temperatures), class_grids(run))


def read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A JSON object holding ``keys``; a corrupt file or a missing key is a UserError naming it."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; delete it and re-run the step that writes it") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it is from another version, "
                        "re-run the step that writes it")
    return obj


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


# ---------------------------------------------------------------- metrics.json


def build_metrics(f: RunFiles) -> dict:
    """SPEC's keys, plus ratios to the uniform prior, stage-2 curves' last values and timings."""
    bits = {p: float(f.bits[p]) for p in PRIORS}
    fd = {k: float(f.quality[k]) for k in ("fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform")}
    k = int(f.bits["num_embeddings"])
    grid = f.stage2.get("grid")  # (h, w) of a code grid, from stage2/summary.json
    return {
        "num_embeddings": k,
        "bits_per_code": bits,
        "bits_per_code_ratio_to_uniform": {p: ratio(bits[p], bits["uniform"]) for p in PRIORS},
        "stage1": {
            "val_recon_nmse": f.stage1["val_recon_nmse"],
            "perplexity": f.stage1["perplexity"],
            "codes_used": f.stage1["codes_used"],
            "codes_used_fraction": f.stage1["codes_used"] / k,
            **{key: f.stage1.get(key) for key in ("steps", "train_seconds", "images_per_s")},
        },
        "bits_per_image": {p: bits[p] * grid[0] * grid[1] for p in PRIORS} if grid else None,
        "stage2": {
            "steps": f.stage2.get("steps", last(f.stage2_rows, "step")),
            "final_train_bits_per_code": last(f.stage2_rows, "train_bits_per_code"),
            "final_val_bits_per_code": last(f.stage2_rows, "val_bits_per_code"),
            "train_seconds": f.stage2.get("train_time_s"),
            "grids_per_s": f.stage2.get("grids_per_s"),
            "parameters": f.stage2.get("parameters"),
            "grid": grid,
        },
        "sample_quality": {
            **fd,
            "fd_learned_over_uniform": ratio(fd["fd_learned"], fd["fd_uniform"]),
            "fd_marginal_over_uniform": ratio(fd["fd_marginal"], fd["fd_uniform"]),
            "classifier_val_accuracy": f.quality.get("classifier_val_accuracy"),
            "classifier_task": f.quality.get("classifier_task"),
            "fd_samples": f.quality.get("fd_samples"),
        },
        "dataset": f.config.data.dataset,
        "seed": f.config.run.seed,
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def last(rows: list[dict], key: str):
    """The value of ``key`` in the last row that has it, or None."""
    return next((row[key] for row in reversed(rows) if key in row), None)


# ---------------------------------------------------------------- plots


def series(rows: list[dict], key: str) -> tuple[list, list]:
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


# ---------------------------------------------------------------- the page

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fff;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 0 0 6px; }
.sub { color: #666; margin: 0 0 16px; }
.finding { background: #f4f7fb; border-left: 4px solid #4a78b5; padding: 10px 16px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f6f6f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.config { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: flex-start; }
.config table { font-size: 13.5px; margin: 0; }
.config td, .config th { padding: 3px 6px; white-space: nowrap; }
.config td:first-child { color: #555; }
.grid { display: grid; gap: 16px; grid-template-columns: repeat(auto-fill, minmax(var(--cell, 300px), 1fr)); }
figure { margin: 0; }
figure img { width: 100%; border: 1px solid #ddd; }
figcaption { color: #444; font-size: 14px; text-align: center; margin-top: 2px; }
img.plot { max-width: 100%; image-rendering: auto; border: 0; }
img.wide { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.note { color: #666; font-size: 14px; }
"""


def render_html(f: RunFiles, m: dict, plots: dict[str, Path]) -> str:
    """The whole page, top to bottom in reading order."""
    cfg = f.config
    sections = [
        f"<h1>Prior study: {esc(cfg.data.dataset)}, K = {m['num_embeddings']}</h1>",
        f"<p class='sub'>run directory <code>{esc(f.run.resolve())}</code></p>",
        f"<p>{INTRO}</p>",
        f"<div class='finding'>{findings(m)}</div>",
        "<h2>Configuration</h2>", config_tables(cfg),
        "<h2>Stage 1: VQ-VAE</h2>", stage1_table(m),
        img(plots["stage1_curves.png"], "stage-1 training curves", "plot"),
        img(plots["codebook_usage.png"], "codebook usage", "plot"),
        "<h3>Val images (top half) and their stage-1 reconstructions (bottom half)</h3>",
        img(f.run / "stage1/reconstructions.png", "originals above reconstructions", "wide"),
        "<h2>Stage 2: how well each prior predicts held-out codes</h2>", bits_table(m),
        "<p class='note'>Mean negative log2-likelihood of the val code grids; lower is better. "
        "The ratio is the share of the uniform prior's code length that each prior still needs.</p>",
        img(plots["stage2_curves.png"], "stage-2 training curve", "plot"), stage2_table(m),
        "<h2>Sample quality: Fréchet distance to real images</h2>", fd_table(m),
        f"<p class='note'>{fd_note(m)}</p>",
        "<h2>Samples of the three priors</h2>", f"<p class='note'>{samples_note(cfg)}</p>",
        figures([(f"{p} prior", f.run / f"samples/{p}.png") for p in PRIORS], cell=300),
    ]
    if f.temperatures:
        sections += ["<h2>Temperature sweep of the learned prior</h2>",
                     "<p class='note'>Logits divided by T before sampling: low T gives typical, less varied "
                     "images; high T more varied and less coherent ones.</p>",
                     figures([(f"T = {t:g}", p) for t, p in f.temperatures], cell=250)]
    if f.classes:
        names = CLASS_NAMES.get(cfg.data.dataset, ())
        sections += ["<h2>Class-conditional samples of the learned prior</h2>",
                     figures([(f"{c}: {names[c]}" if c < len(names) else f"class {c}", p) for c, p in f.classes],
                             cell=180)]
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>Prior study: {esc(cfg.data.dataset)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


INTRO = (
    "A VQ-VAE (stage 1) turns each image into a small grid of discrete codes, indices into a codebook of "
    "K learned vectors, and its decoder turns a grid back into an image. A gated PixelCNN (stage 2) then learns "
    "a prior over code grids, predicting each code from the codes above and to its left; sampling a grid from the "
    "prior and decoding it generates a new image. This report asks how much that learned prior matters. It "
    "compares it with two priors that keep stage 1 unchanged: a <b>marginal</b> prior that draws every code "
    "independently with its training-set frequency, and a <b>uniform</b> prior that draws every code with "
    "probability 1/K. Each prior is measured by how many bits it needs per held-out code, and by the Fréchet "
    "distance between its decoded samples and real images in the feature space of a small classifier."
)


def findings(m: dict) -> str:
    b, q = m["bits_per_code"], m["sample_quality"]
    share = m["bits_per_code_ratio_to_uniform"]["learned"]
    saved = b["marginal"] - b["learned"]
    text = (f"The learned prior codes held-out grids in <b>{b['learned']:.3f}</b> bits per code, "
            f"{share:.0%} of the uniform prior's {b['uniform']:.3f} bits and {abs(saved):.3f} bits "
            f"{'less' if saved >= 0 else 'more'} than the marginal prior ({b['marginal']:.3f}). "
            if share is not None else "")
    return text + (f"Its samples are at Fréchet distance <b>{q['fd_learned']:.3g}</b> from real images, against "
                   f"{q['fd_marginal']:.3g} for the marginal and {q['fd_uniform']:.3g} for the uniform prior; "
                   f"decoding real codes (the floor) gives {q['fd_reconstructions']:.3g}.")


def fd_note(m: dict) -> str:
    q = m["sample_quality"]
    parts = ["Fréchet distance between Gaussians fitted to penultimate-layer features of each image set and of "
             "real val images; lower is better. The reconstructions row decodes the val images' own codes: "
             "the floor that a perfect prior would reach with this stage 1."]
    if q.get("classifier_val_accuracy") is not None:
        task = ("rotation prediction (the data has no labels)" if q.get("classifier_task") == "rotation"
                else "the dataset's classes")
        parts.append(f"The feature classifier was trained on {task}; val accuracy "
                     f"{q['classifier_val_accuracy']:.1%}.")
    if q.get("fd_samples"):
        parts.append(f"{q['fd_samples']} generated images per prior.")
    return " ".join(parts)


def samples_note(cfg: Config) -> str:
    s = cfg.sample
    top_k = f", top-k {s.top_k}" if s.top_k else ""
    return (f"Code grids drawn from each prior (learned prior at temperature {s.temperature:g}{top_k}) and decoded "
            "by the same stage-1 decoder.")


def config_tables(cfg: Config) -> str:
    s1, s2, sm = cfg.stage1, cfg.stage2, cfg.sample
    groups = {
        "Data": [("dataset", cfg.data.dataset), ("image size", cfg.data.image_size or "native"),
                 ("channels", cfg.data.channels or "native"), ("seed", cfg.run.seed)],
        "Stage 1 (VQ-VAE)": [("codebook size K", s1.num_embeddings), ("code dimension D", s1.embedding_dim),
                             ("commitment cost", s1.commitment_cost),
                             ("codebook update", f"EMA, decay {s1.decay:g}" if s1.decay > 0 else "loss"),
                             ("downsamples", s1.downsamples), ("hidden", s1.hidden),
                             ("residual blocks enc / dec", f"{s1.encoder_residual_layers} / {s1.residual_layers}"),
                             ("steps × batch", f"{s1.steps} × {s1.batch_size}"), ("learning rate", f"{s1.lr:g}")],
        "Stage 2 (PixelCNN)": [("layers × hidden", f"{s2.layers} × {s2.hidden}"), ("kernel", s2.kernel_size),
                               ("conditional", "yes" if s2.conditional else "no"), ("dropout", s2.dropout),
                               ("steps × batch", f"{s2.steps} × {s2.batch_size}"), ("learning rate", f"{s2.lr:g}"),
                               ("marginal smoothing", s2.marginal_smoothing)],
        "Sampling": [("samples per grid", sm.n), ("temperature", sm.temperature),
                     ("top-k", sm.top_k or "off"), ("sweep", ", ".join(f"{t:g}" for t in sm.temperatures)),
                     ("images for FD", sm.fd_samples), ("classifier steps", sm.classifier_steps)],
    }
    tables = [table([name, ""], [[k, v] for k, v in rows]) for name, rows in groups.items()]
    return f"<div class='config'>{''.join(tables)}</div>"


def stage1_table(m: dict) -> str:
    s = m["stage1"]
    rows = [["val reconstruction NMSE", num(s["val_recon_nmse"], 4)],
            ["codebook perplexity (val)", num(s["perplexity"], 1)],
            ["codes used (val)", f"{s['codes_used']} of {m['num_embeddings']} ({s['codes_used_fraction']:.0%})"]]
    if s.get("steps") is not None:
        rows.append(["steps", s["steps"]])
    if s.get("train_seconds") is not None:
        rows.append(["training time", f"{s['train_seconds']:.0f} s"])
    if s.get("images_per_s") is not None:
        rows.append(["throughput", f"{s['images_per_s']:.0f} images/s"])
    return table(["stage 1", "value"], rows)


def bits_table(m: dict) -> str:
    """Bits per code and their ratio to uniform; bits per image (a whole h x w grid) when the grid is known."""
    b, r, per_image = m["bits_per_code"], m["bits_per_code_ratio_to_uniform"], m["bits_per_image"]
    header = ["prior", "bits per code", "ratio to uniform"] + (["bits per image"] if per_image else [])
    return table(header, [[p, num(b[p], 3), num(r[p], 3)] + ([num(per_image[p], 1)] if per_image else [])
                          for p in PRIORS])


def stage2_table(m: dict) -> str:
    s = m["stage2"]
    rows = [["val bits per code (last eval)", num(s["final_val_bits_per_code"], 3)], ["steps", s["steps"]]]
    if s.get("grid"):
        rows.append(["code grid", f"{s['grid'][0]} × {s['grid'][1]}"])
    if s.get("parameters") is not None:
        rows.append(["parameters", f"{s['parameters']:,}"])
    if s.get("train_seconds") is not None:
        rows.append(["training time", f"{s['train_seconds']:.0f} s"])
    if s.get("grids_per_s") is not None:
        rows.append(["throughput", f"{s['grids_per_s']:.0f} grids/s"])
    return table(["stage 2", "value"], rows)


def fd_table(m: dict) -> str:
    q = m["sample_quality"]
    labels = {"reconstructions": "reconstructions (floor)", **{p: f"{p} prior" for p in PRIORS}}
    return table(["images", "Fréchet distance", "ratio to uniform"],
                 [[label, num(q[f"fd_{k}"], 3), num(ratio(q[f"fd_{k}"], q["fd_uniform"]), 3)]
                  for k, label in labels.items()])


# ---------------------------------------------------------------- HTML helpers


def esc(value) -> str:
    return html.escape(str(value))


def num(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    """A table; cells that look numeric are right-aligned."""
    def cell(v):
        text = esc(v)
        numeric = text.replace(",", "").replace(".", "", 1).removeprefix("-").isdigit()
        return f"<td class='num'>{text}</td>" if numeric else f"<td>{text}</td>"
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def img(path: Path, alt: str, cls: str) -> str:
    return f"<p><img class='{cls}' alt='{esc(alt)}' title='{esc(path.name)}' src='{data_uri(path)}'></p>"


def figures(items: list[tuple[str, Path]], cell: int) -> str:
    """Captioned images in a grid of columns at least ``cell`` pixels wide."""
    cells = "".join(f"<figure><img alt='{esc(c)}' title='{esc(p.name)}' src='{data_uri(p)}'>"
                    f"<figcaption>{esc(c)}</figcaption></figure>" for c, p in items)
    return f"<div class='grid' style='--cell: {cell}px'>{cells}</div>"
