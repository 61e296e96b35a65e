"""The report page, ``DIR/report/index.html``: ``templates/report.html`` filled with the sections built here.

The page is one self-contained file: the CSS is in the template and every image is inlined as
a base64 ``data:`` URI, so it renders offline and survives being copied away from the run.
"""

from __future__ import annotations

import base64
from html import escape
from importlib.resources import files
from pathlib import Path
from string import Template

from data.config import Config
from stage2_prior import PRIORS

from .metrics import ratio
from .results import RunFiles


def render_html(f: RunFiles, m: dict, plots: dict[str, Path]) -> str:
    """The whole page: the template's placeholders filled in reading order."""
    template = Template((files("pipeline") / "templates" / "report.html").read_text(encoding="utf-8"))
    return template.substitute(
        dataset=esc(f.config.data.dataset),
        num_embeddings=m["num_embeddings"],
        run_dir=esc(f.run.resolve()),
        findings=findings(m),
        config_tables=config_tables(f.config),
        stage1_table=stage1_table(m),
        stage1_curves=img(plots["stage1_curves.png"], "stage-1 training curves", "plot"),
        codebook_usage=img(plots["codebook_usage.png"], "codebook usage", "plot"),
        reconstructions=img(f.run / "stage1/reconstructions.png", "originals above reconstructions", "wide"),
        bits_table=bits_table(m),
        stage2_curves=img(plots["stage2_curves.png"], "stage-2 training curve", "plot"),
        stage2_table=stage2_table(m),
        fd_table=fd_table(m),
        fd_note=fd_note(m),
        samples_note=samples_note(f.config),
        prior_samples=figures([(f"{p} prior", f.run / f"samples/{p}.png") for p in PRIORS], cell=300),
        # Each optional section starts on a new line; none at all leaves no empty line.
        optional_sections="".join(f"\n{s}" for s in (temperature_section(f), class_section(f)) if s),
    )


# ---------------------------------------------------------------- prose


def findings(m: dict) -> str:
    """The headline: the learned prior's bits per code and Fréchet distance against the two baselines."""
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


# ---------------------------------------------------------------- optional sections


def temperature_section(f: RunFiles) -> str:
    """The learned prior's grids at each sweep temperature, or "" when none exists."""
    if not f.temperatures:
        return ""
    return "\n".join(["<h2>Temperature sweep of the learned prior</h2>",
                      "<p class='note'>Logits divided by T before sampling: low T gives typical, less varied "
                      "images; high T more varied and less coherent ones.</p>",
                      figures([(f"T = {t:g}", p) for t, p in f.temperatures], cell=250)])


def class_section(f: RunFiles) -> str:
    """A conditional prior's per-class grids, or "" when none exists; named by stage 1's ``class_names``."""
    if not f.classes:
        return ""
    names = f.stage1.get("class_names") or ()
    return "\n".join(["<h2>Class-conditional samples of the learned prior</h2>",
                      figures([(class_caption(c, names), p) for c, p in f.classes], cell=180)])


def class_caption(c: int, names) -> str:
    """``"c: name"`` when class ``c`` has a name, else ``"class c"``."""
    return f"{c}: {names[c]}" if c < len(names) else f"class {c}"


# ---------------------------------------------------------------- tables


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
    return escape(str(value))


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
