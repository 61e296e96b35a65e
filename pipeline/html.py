"""The report page, ``index.html`` (``RunPaths.index``): ``templates/report.html`` filled with the sections built here.

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


def style() -> str:
    """The CSS every page of the tool shares (``templates/style.css``)."""
    return (files("pipeline") / "templates" / "style.css").read_text(encoding="utf-8")


PRIOR_NAMES = {"pixelcnn": "gated PixelCNN", "transformer": "causal transformer"}  # stage2.architecture


def render_html(run: RunFiles, metrics: dict, plots: dict[str, Path]) -> str:
    """The whole page: the template's placeholders filled in reading order."""
    template = Template((files("pipeline") / "templates" / "report.html").read_text(encoding="utf-8"))
    return template.substitute(
        style=style(),
        dataset=esc(run.config.data.dataset),
        prior_name=PRIOR_NAMES[run.config.stage2.architecture],
        num_embeddings=metrics["num_embeddings"],
        run_dir=esc(run.paths.root.resolve()),
        findings=findings(metrics),
        config_tables=config_tables(run.config),
        stage1_table=stage1_table(metrics),
        stage1_curves=img(plots["stage1_curves"], "stage-1 training curves", "plot"),
        codebook_usage=img(plots["codebook_usage"], "codebook usage", "plot"),
        reconstructions=img(run.paths.reconstructions, "originals above reconstructions", "wide"),
        bits_table=bits_table(metrics),
        stage2_curves=img(plots["stage2_curves"], "stage-2 training curve", "plot"),
        stage2_table=stage2_table(metrics),
        bpd_section=prefixed(bpd_section(metrics, plots.get("bits_per_dim"))),
        fd_table=fd_table(metrics),
        fd_note=fd_note(metrics, run.inception_stale),
        samples_note=samples_note(run.config),
        prior_samples=figures([(f"{p} prior", run.paths.sample_grid(p)) for p in PRIORS], cell=300),
        # Each optional section starts on a new line; none at all leaves no empty line.
        optional_sections="".join(f"\n{s}" for s in (novelty_section(metrics, run.neighbours),
                                                     temperature_section(run, metrics), class_section(run)) if s),
    )


# ---------------------------------------------------------------- prose


def findings(metrics: dict) -> str:
    """The headline: the learned prior's bits per code and Fréchet distance against the two baselines."""
    b, q = metrics["bits_per_code"], metrics["sample_quality"]
    share = metrics["bits_per_code_ratio_to_uniform"]["learned"]
    saved = b["marginal"] - b["learned"]
    text = (f"The learned prior codes held-out grids in <b>{b['learned']:.3f}</b> bits per code, "
            f"{share:.0%} of the uniform prior's {b['uniform']:.3f} bits and {abs(saved):.3f} bits "
            f"{'less' if saved >= 0 else 'more'} than the marginal prior ({b['marginal']:.3f}). "
            if share is not None else "")
    text += (f"Its samples are at Fréchet distance <b>{q['fd_learned']:.3g}</b> from real images, "
             f"<b>{num(q['fd_learned_over_perfect_prior'], 2)}x</b> what a perfect prior would score with this stage 1 "
             f"({q['fd_perfect_prior']:.3g}: decoded training grids), against {q['fd_marginal']:.3g} for the "
             f"marginal and {q['fd_uniform']:.3g} for the uniform prior.")
    bpd = metrics.get("bits_per_dim")
    if bpd:
        text += (f" In bits per dimension (negative ELBO, an upper bound on -log<sub>2</sub> p(x)): learned "
                 f"<b>{bpd['learned']:.3f}</b>, marginal {bpd['marginal']:.3f}, uniform {bpd['uniform']:.3f}, "
                 f"of which {bpd['distortion']:.3f} is the shared distortion of the "
                 f"{metrics.get('likelihood')} decoder.")
    return text


def sampling_label(sampling: dict | None) -> str:
    """``T = 1, top-k off, top-p off``: the sampling settings a number was measured at, as quality.json records them."""
    if not sampling:
        return "settings not recorded"
    t = sampling.get("temperature")
    return f"T = {t:g}, top-k {sampling.get('top_k') or 'off'}, top-p {sampling.get('top_p') or 'off'}"


def fd_note(metrics: dict, inception_stale: str | None = None) -> str:
    q = metrics["sample_quality"]
    parts = ["Fréchet distance between Gaussians fitted to penultimate-layer features of each image set and of "
             "real val images; lower is better. The yardstick is the perfect prior: random sets of training code "
             "grids, decoded, are what a prior drawing exactly the training codes would produce with this stage 1. "
             "Real training images show the metric's own noise at this set size. The reconstructions decode the "
             "val images' own codes: they share their images with the val set, so they read lower than any prior "
             "can."]
    if q.get("sampling"):
        setting = sampling_label(q["sampling"])
        parts.append(f"Each prior is sampled at {setting}, the settings of its sample grid below.")
    if q.get("fid_inception_learned") is not None:
        parts.append(f"Inception FID: the same image sets ({q.get('fid_inception_images')} per set) in the 2048-d "
                     "pool features of the standard FID InceptionV3, the feature space papers report (compare at "
                     "equal sample size: FID is biased upwards for small sets).")
    elif inception_stale:
        parts.append(f"The Inception FID file is out of date ({esc(inception_stale)}) and is left out.")
    if q.get("classifier_val_accuracy") is not None:
        task = ("rotation prediction (the data has no labels)" if q.get("classifier_task") == "rotation"
                else "the dataset's classes")
        parts.append(f"The feature classifier was trained on {task}; val accuracy "
                     f"{q['classifier_val_accuracy']:.1%}.")
    if q.get("fd_samples"):
        parts.append(f"{q['fd_samples']} generated images per prior.")
    draws = q.get("fd_learned_draws")
    if draws:
        parts.append(f"The learned prior's distance is the mean over {len(draws)} independent sets "
                     f"(each between {min(draws):.3g} and {max(draws):.3g}), as are the perfect prior's and the "
                     "training images'.")
    return " ".join(parts)


def samples_note(config: Config) -> str:
    s = config.sample
    top_k = f", top-k {s.top_k}" if s.top_k else ""
    top_p = f", top-p {s.top_p:g}" if s.top_p else ""
    return (f"Code grids drawn from each prior (learned prior at temperature {s.temperature:g}{top_k}{top_p}) and "
            "decoded by the same stage-1 decoder.")


# ---------------------------------------------------------------- optional sections


def temperature_section(run: RunFiles, metrics: dict | None = None) -> str:
    """The learned prior's grids at each sweep temperature and their Fréchet distances, or "" when none exists."""
    if not run.temperatures:
        return ""
    return "\n".join(["<h2>Temperature sweep of the learned prior</h2>",
                      "<p class='note'>Logits divided by T before sampling: low T gives typical, less varied "
                      "images; high T more varied and less coherent ones.</p>",
                      figures([(f"T = {t:g}", p) for t, p in run.temperatures], cell=250),
                      temperature_fd_table(metrics or {}, run.config)])


def temperature_fd_table(metrics: dict, config: Config) -> str:
    """Fréchet distance of the learned prior's samples at each sweep temperature, or "" when not measured."""
    by_t = (metrics.get("sample_quality") or {}).get("fd_learned_by_temperature") or {}
    if not by_t:
        return ""
    q, s = metrics["sample_quality"], config.sample
    perfect = q.get("fd_perfect_prior")
    rows = [[f"{float(t):g}", num(fd, 3), num(ratio(fd, perfect), 2) if perfect else "–"]
            for t, fd in sorted(by_t.items(), key=lambda item: float(item[0]))]
    draws = len(q.get("fd_learned_draws") or [])
    own = f"the mean of the learned-prior row's {draws} sets" if draws > 1 else "the learned-prior row's set"
    note = (f"<p class='note'>Fréchet distance to real val images of one set of {q.get('fd_samples')} samples at "
            f"each temperature (top-k {s.top_k or 'off'}, top-p {s.top_p or 'off'}, as the grids above), except "
            f"at the grids' own temperature ({sampling_label(q.get('sampling'))}), where it is {own}; "
            "one set moves it by 10-25%.</p>")
    return table(["temperature", "Fréchet distance", "x perfect prior"], rows) + "\n" + note


def bpd_section(metrics: dict, plot: Path | None) -> str:
    """Bits per dimension: the stacked rate + distortion bars, a table and what the bound means; "" without them."""
    bpd = metrics.get("bits_per_dim")
    if not bpd:
        return ""
    rows = [[p, num(bpd["distortion"], 3), num(bpd[p] - bpd["distortion"], 3), num(bpd[p], 3)] for p in PRIORS]
    likelihood = metrics.get("likelihood") or "gaussian"
    decoder = ("a discretised Gaussian centred on the decoder's output, one scale per channel fitted by maximum "
               "likelihood on training images" if likelihood == "gaussian" else
               "a discretised logistic with the mean and scale the decoder outputs for each sub-pixel")
    note = ("Negative ELBO per sub-pixel of the val images, in bits: "
            "(−log<sub>2</sub> p(x | z) − log<sub>2</sub> p<sub>prior</sub>(z)) / (C·H·W) with z the image's own "
            f"codes. The distortion is the likelihood of each 8-bit value under {decoder} (a probability of one "
            "of 256 levels, edge levels open-ended, not a density), the same for every prior; the rate is the "
            "prior's exact code length of the grid (h·w·log<sub>2</sub> K for the uniform prior). The VQ "
            "posterior is deterministic (one code grid per image, no posterior entropy), so these are upper "
            "bounds on −log<sub>2</sub> p(x) / (C·H·W), comparable to the bits/dim that papers report for "
            "likelihood models of 8-bit data.")
    parts = ["<h3>Bits per dimension: rate + distortion</h3>",
             table(["prior", "distortion", "rate", "bits per dim"], rows), f"<p class='note'>{note}</p>"]
    return "\n".join(parts + ([img(plot, "bits per dimension, stacked", "plot")] if plot else []))


def novelty_section(metrics: dict, neighbours: dict | None) -> str:
    """Samples above their nearest training images, and how close they are compared with val images."""
    n = metrics.get("novelty")
    if not n:
        return ""
    feature = n.get("feature") or {}
    rows = [["pixel (RMS difference, pixels in [0, 1])", num(n["median_nn_distance_samples"], 4),
             num(n["median_nn_distance_val"], 4), f"{n['copy_fraction']:.1%}"]]
    if feature:
        rows.append(["classifier features (Euclidean)", num(feature["median_nn_distance_samples"], 3),
                     num(feature["median_nn_distance_val"], 3), f"{feature['copy_fraction']:.1%}"])
    note = (f"For each of the learned prior's {n.get('samples')} samples (the Fréchet set), the nearest of the "
            f"{n.get('train_images')} training images. Val images are new by construction, so their distances "
            "show how far a new image lies from the training set; a sample closer to its nearest training image "
            "than the 1st percentile of the val images' distances counts as a copy. The report's metrics file figures "
            "(median_nn_distance_*, copy_fraction) are the pixel-space ones.")
    parts = ["<h2>Novelty: are the samples new images?</h2>",
             table(["space", "median distance, samples", "median distance, val images", "copies"], rows),
             f"<p class='note'>{note}</p>"]
    captions = {"typical": "the first samples (top row), their nearest training image in pixel space (middle) "
                           "and in feature space (bottom)",
                "closest": "the samples closest to a training image in pixel space (the likeliest copies), above "
                           "the same neighbours"}
    for name, path in (neighbours or {}).items():
        parts += [f"<h3>{esc(captions[name][0].upper() + captions[name][1:])}</h3>", img(path, captions[name], "wide")]
    return "\n".join(parts)


def class_section(run: RunFiles) -> str:
    """A conditional prior's per-class grids, or "" when none exists; named by stage 1's ``class_names``."""
    if not run.classes:
        return ""
    names = run.stage1.get("class_names") or ()
    return "\n".join(["<h2>Class-conditional samples of the learned prior</h2>",
                      figures([(class_caption(c, names), p) for c, p in run.classes], cell=180)])


def class_caption(label: int, names) -> str:
    """``"label: name"`` when the class has a name, else ``"class label"``."""
    return f"{label}: {names[label]}" if label < len(names) else f"class {label}"


# ---------------------------------------------------------------- tables


def config_tables(config: Config) -> str:
    s1, s2, sm = config.stage1, config.stage2, config.sample
    groups = {
        "Data": [("dataset", config.data.dataset), ("image size", config.data.image_size or "native"),
                 ("channels", config.data.channels or "native"), ("seed", config.run.seed)],
        "Stage 1 (VQ-VAE)": [("codebook size K", s1.num_embeddings), ("code dimension D", s1.embedding_dim),
                             ("commitment cost", s1.commitment_cost),
                             ("codebook update", f"EMA, decay {s1.decay:g}" if s1.decay > 0 else "loss"),
                             ("decoder likelihood", s1.likelihood),
                             ("downsamples", s1.downsamples), ("hidden", s1.hidden),
                             ("residual blocks enc / dec", f"{s1.encoder_residual_layers} / {s1.residual_layers}"),
                             ("steps × batch", f"{s1.steps} × {s1.batch_size}"),
                             ("decoder-only steps", s1.decoder_steps), ("learning rate", f"{s1.lr:g}")],
        f"Stage 2 ({PRIOR_NAMES[s2.architecture]})": [("layers × hidden", f"{s2.layers} × {s2.hidden}"),
                               ("kernel" if s2.architecture == "pixelcnn" else "heads",
                                s2.kernel_size if s2.architecture == "pixelcnn" else s2.heads),
                               ("conditional", "yes" if s2.conditional else "no"), ("dropout", s2.model_config().dropout),
                               ("steps × batch", f"{s2.steps} × {s2.batch_size}"), ("learning rate", f"{s2.lr:g}"),
                               ("marginal smoothing", s2.marginal_smoothing)],
        "Sampling": [("samples per grid", sm.n), ("temperature", sm.temperature),
                     ("top-k", sm.top_k or "off"), ("top-p", sm.top_p or "off"),
                     ("sweep", ", ".join(f"{t:g}" for t in sm.sweep)),
                     ("Inception FID", str(sm.inception_fid).lower()),
                     ("images for FD", sm.fd_samples), ("FD draws (learned)", sm.fd_draws),
                     ("classifier steps / seed", f"{sm.classifier_steps} / {sm.classifier_seed}")],
    }
    tables = [table([name, ""], [[k, v] for k, v in rows]) for name, rows in groups.items()]
    return f"<div class='config'>{''.join(tables)}</div>"


def stage1_table(metrics: dict) -> str:
    s = metrics["stage1"]
    rows = [["val reconstruction NMSE", num(s["val_recon_nmse"], 4)],
            ["codebook perplexity (val)", num(s["perplexity"], 1)],
            ["codes used (val)", f"{s['codes_used']} of {metrics['num_embeddings']} ({s['codes_used_fraction']:.0%})"]]
    if s.get("val_distortion_bits_per_dim") is not None:
        rows.append([f"val distortion ({s.get('likelihood')} decoder)",
                     f"{s['val_distortion_bits_per_dim']:.3f} bits/dim"])
    rows += optional_rows(s, [("steps", "steps", "{}"), ("train_seconds", "training time", "{:.0f} s"),
                              ("images_per_s", "throughput", "{:.0f} images/s")])
    return table(["stage 1", "value"], rows)


def bits_table(metrics: dict) -> str:
    """Bits per val code, their ratio to uniform, the learned prior's train bits and train/val gap, bits per image."""
    b, r, per_image = metrics["bits_per_code"], metrics["bits_per_code_ratio_to_uniform"], metrics["bits_per_image"]
    train = b.get("learned_train")
    header = ["prior", "bits per code (val)", "ratio to uniform"] + \
        (["train bits per code (val − train gap)"] if train is not None else []) + \
        (["bits per image"] if per_image else [])

    def train_cell(prior):
        return [f"{train:.3f} ({b[prior] - train:+.3f})" if prior == "learned" else "–"] if train is not None else []

    return table(header, [[p, num(b[p], 3), num(r[p], 3)] + train_cell(p) +
                          ([num(per_image[p], 1)] if per_image else []) for p in PRIORS])


def stage2_table(metrics: dict) -> str:
    s = metrics["stage2"]
    rows = [["val bits per code (last eval)", num(s["final_val_bits_per_code"], 3)], ["steps", s["steps"]]]
    if s.get("grid"):
        rows.append(["code grid", f"{s['grid'][0]} × {s['grid'][1]}"])
    rows += optional_rows(s, [("parameters", "parameters", "{:,}"), ("train_seconds", "training time", "{:.0f} s"),
                              ("grids_per_s", "throughput", "{:.0f} grids/s")])
    return table(["stage 2", "value"], rows)


def optional_rows(values: dict, rows: list[tuple[str, str, str]]) -> list[list]:
    """[label, formatted value] for each (key, label, format) whose value is known."""
    return [[label, fmt.format(values[key])] for key, label, fmt in rows if values.get(key) is not None]


def fd_table(metrics: dict) -> str:
    """Fréchet distance per image set (each prior labelled with its sampling settings), Inception FID when measured."""
    q = metrics["sample_quality"]
    setting = sampling_label(q.get("sampling"))
    labels = {**{p: f"{p} prior ({setting})" for p in PRIORS},
              "perfect_prior": "a perfect prior (decoded training grids)", "train_images": "real training images",
              "reconstructions": "reconstructions (decoded val codes)"}
    inception = q.get("fid_inception_learned") is not None
    header = ["images", "Fréchet distance", "x perfect prior"] + (["Inception FID"] if inception else [])
    return table(header, [[label, num(q[f"fd_{k}"], 3), num(ratio(q[f"fd_{k}"], q["fd_perfect_prior"]), 2)]
                          + ([num(q.get(f"fid_inception_{k}"), 2) if q.get(f"fid_inception_{k}") is not None
                              else "–"] if inception else [])
                          for k, label in labels.items()])


# ---------------------------------------------------------------- HTML helpers


def prefixed(section: str) -> str:
    """A section on a new line, or nothing for an empty one."""
    return f"\n{section}" if section else ""


def esc(value) -> str:
    return escape(str(value))


def num(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list]) -> str:
    """A table; cells that look numeric are right-aligned."""
    def cell(value):
        text = esc(value)
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
    cells = "".join(f"<figure><img alt='{esc(caption)}' title='{esc(path.name)}' src='{data_uri(path)}'>"
                    f"<figcaption>{esc(caption)}</figcaption></figure>" for caption, path in items)
    return f"<div class='grid' style='--cell: {cell}px'>{cells}</div>"
