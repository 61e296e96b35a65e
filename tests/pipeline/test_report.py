"""The prior study report, on a synthetic run directory with every file the other stages write."""

import base64
import json
import re

import pytest
import torch
from data import UserError, load_config, save_config
from data.cli import command_for, render
from data.errors import MissingFile
from data.datasets import save_image_grid
from data.rundir import RunPaths
from pipeline import sources
from pipeline.report import write_report
from pipeline.results import required
from pipeline.sources import png_text, stamp
from tests.helpers import one_line_error

K = 16
BITS = {"learned": 2.5, "marginal": 3.25, "uniform": 4.0, "num_embeddings": K}
QUALITY = {"fd_reconstructions": 1.5, "fd_learned": 6.0, "fd_marginal": 20.0, "fd_uniform": 40.0,
           "fd_perfect_prior": 4.0, "fd_train_images": 3.0,
           "classifier_val_accuracy": 0.84, "classifier_task": "labels", "fd_samples": 200}
SUMMARY = {"val_recon_nmse": 0.071, "perplexity": 9.5, "codes_used": 12, "num_embeddings": K,
           "code_counts": [90, 40, 30, 0, 20, 10, 5, 0, 3, 2, 1, 0, 60, 7, 0, 4],
           "steps": 100, "train_seconds": 12.5, "images_per_s": 1024.0,
           "class_names": ["circle", "square", "triangle"]}  # not Fashion-MNIST's, although that is the dataset
STAGE2 = {"steps": 100, "final_val_bits_per_code": 2.6, "train_time_s": 30.0, "grids_per_s": 400.0,
          "parameters": 18096, "num_embeddings": K, "grid": [7, 7], "num_classes": 3}


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def grid(path, seed, text=None):
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) - 0.5
    save_image_grid(images, path, nrow=4, scale=1, text=text)


def make_run(root, temperatures=(0.5, 1.0), classes=(0, 1, 2)):
    """A run directory as the stages leave it: config, metrics, summaries, sample grids, quality.json."""
    run = root / "run"
    (run / "stage1").mkdir(parents=True)
    (run / "stage2").mkdir()
    (run / "report").mkdir()
    config = load_config(overrides=[f"stage1.num_embeddings={K}", "stage2.conditional=true",
                                    f"sample.temperatures=[{', '.join(map(str, temperatures))}]"])
    save_config(config, run / "config.yaml")
    samples = png_text(sources.samples(RunPaths(run), config))  # what the grids record: drawn from this run's models
    val1 = {50: {"val_recon_nmse": 0.012, "val_perplexity": 4.5, "val_codes_used": 9},
            100: {"val_recon_nmse": 0.006, "val_perplexity": 9.1, "val_codes_used": 12}}
    write_lines(run / "stage1/metrics.jsonl", [
        {"step": s, "loss": 1.0 / s, "recon_nmse": 0.5 / s, "vq_loss": 0.1, "perplexity": s / 10, "codes_used": 8,
         "lr": 1e-3, **val1.get(s, {})} for s in range(10, 101, 10)])
    (run / "stage1/summary.json").write_text(json.dumps(SUMMARY))
    grid(run / "stage1/reconstructions.png", 0)
    val2 = {50: {"val_bits_per_code": 3.1}, 100: {"val_bits_per_code": 2.6}}
    write_lines(run / "stage2/metrics.jsonl", [
        {"step": s, "train_bits_per_code": 4.0 - s / 100, "lr": 1e-3, **val2.get(s, {})} for s in range(10, 101, 10)])
    (run / "stage2/summary.json").write_text(json.dumps(STAGE2))
    (run / "stage2/bits_per_code.json").write_text(json.dumps(stamp(BITS, sources.bits(RunPaths(run)))))
    for i, prior in enumerate(("learned", "marginal", "uniform")):
        grid(run / f"samples/{prior}.png", 1 + i, samples)
    for i, t in enumerate(temperatures):
        grid(RunPaths(run).temperature_grid(t), 10 + i, samples)
    for c in classes:
        grid(run / f"samples/class_{c}.png", 20 + c, samples)
    (run / "report/quality.json").write_text(json.dumps(stamp(QUALITY, sources.quality(RunPaths(run), config))))
    return run


def embedded(html, path):
    """Whether the page inlines exactly the bytes of ``path``."""
    return base64.b64encode(path.read_bytes()).decode() in html


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(run directory, returned metrics) of one report on the full fixture, shared by the reading tests."""
    run = make_run(tmp_path_factory.mktemp("report"))
    return run, write_report(run)


def test_metrics_json_holds_the_spec_keys_with_the_inputs_values(report):
    run, metrics = report
    assert json.loads((run / "report/metrics.json").read_text()) == metrics
    assert metrics["num_embeddings"] == K
    assert metrics["bits_per_code"] == {"learned": 2.5, "marginal": 3.25, "uniform": 4.0}
    assert metrics["stage1"]["val_recon_nmse"] == 0.071
    assert metrics["stage1"]["perplexity"] == 9.5 and metrics["stage1"]["codes_used"] == 12
    fd_keys = ("fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform", "fd_perfect_prior", "fd_train_images")
    assert {k: metrics["sample_quality"][k] for k in fd_keys} == {k: QUALITY[k] for k in fd_keys}


def test_metrics_json_adds_ratios_accuracy_stage2_and_timings(report):
    _, metrics = report
    assert metrics["bits_per_code_ratio_to_uniform"] == {"learned": 0.625, "marginal": 0.8125, "uniform": 1.0}
    assert metrics["sample_quality"]["fd_learned_over_uniform"] == pytest.approx(0.15)
    assert metrics["sample_quality"]["fd_learned_over_perfect_prior"] == pytest.approx(1.5)
    assert metrics["sample_quality"]["classifier_val_accuracy"] == 0.84
    assert metrics["stage2"] == {"steps": 100, "final_train_bits_per_code": 3.0, "final_val_bits_per_code": 2.6,
                                 "train_seconds": 30.0, "grids_per_s": 400.0, "parameters": 18096, "grid": [7, 7]}
    assert metrics["bits_per_image"] == {"learned": 2.5 * 49, "marginal": 3.25 * 49, "uniform": 4.0 * 49}
    assert metrics["stage1"]["train_seconds"] == 12.5 and metrics["stage1"]["codes_used_fraction"] == 0.75


def test_the_page_reads_the_learned_prior_against_a_perfect_prior(report):
    run, _ = report
    page = (run / "report/index.html").read_text()
    assert "<b>1.50x</b> what a perfect prior would score" in page  # 6.0 over 4.0
    fd_table = page[page.index("x perfect prior"):]
    for row in ("a perfect prior (decoded training grids)", "real training images",
                "reconstructions (decoded val codes)"):
        assert row in fd_table
    assert "<td class='num'>0.75</td>" in fd_table  # training images: 3.0 over 4.0


def test_index_html_has_every_section_and_inlines_the_run_images(report):
    run, _ = report
    page = (run / "report/index.html").read_text()
    for heading in ("Prior study", "Configuration", "Stage 1: VQ-VAE", "Stage 2:", "Fréchet distance",
                    "Samples of the three priors", "Temperature sweep", "Class-conditional samples"):
        assert heading in page
    for plot in ("stage1_curves.png", "codebook_usage.png", "stage2_curves.png"):
        assert embedded(page, run / "report" / plot)
    images = ["stage1/reconstructions.png", "samples/learned.png", "samples/marginal.png", "samples/uniform.png",
              "samples/temperature_0.5.png", "samples/temperature_1.png",
              "samples/class_0.png", "samples/class_1.png", "samples/class_2.png"]
    assert all(embedded(page, run / name) for name in images)
    assert "bits per image" in page and "18,096" in page  # from stage2/summary.json
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 3 + len(images)  # every <img> is a data URI: nothing external to fetch
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page


def test_class_captions_use_the_class_names_of_the_stage1_summary(report):
    run, _ = report
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", (run / "report/index.html").read_text())
    assert captions[-3:] == ["0: circle", "1: square", "2: triangle"]
    assert "T-shirt/top" not in captions


@pytest.mark.parametrize("names, first", [({}, "class 0"), ({"class_names": None}, "class 0"),
                                          ({"class_names": ["circle"]}, "0: circle")])
def test_classes_without_a_name_are_captioned_by_index(tmp_path, names, first):
    run = make_run(tmp_path)
    summary = {**{k: v for k, v in SUMMARY.items() if k != "class_names"}, **names}
    (run / "stage1/summary.json").write_text(json.dumps(summary))
    write_report(run)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", (run / "report/index.html").read_text())
    assert captions[-3:] == [first, "class 1", "class 2"]


def test_missing_optional_inputs_skip_their_parts(tmp_path):
    run = make_run(tmp_path, temperatures=(0.7,), classes=())
    (run / "samples/temperature_0.7.png").unlink()
    (run / "stage2/summary.json").unlink()
    metrics = write_report(run)
    page = (run / "report/index.html").read_text()
    assert "Temperature sweep" not in page and "Class-conditional" not in page and "bits per image" not in page
    assert "Samples of the three priors" in page
    assert metrics["bits_per_image"] is None and metrics["stage2"]["steps"] == 100  # from metrics.jsonl


REQUIRED = {RunPaths(".").name(path): fix for path, fix in required(RunPaths(".")).items()}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_a_missing_input_is_a_user_error_naming_the_file_and_the_step_that_makes_it(tmp_path, name):
    run = make_run(tmp_path)
    (run / name).unlink()
    with pytest.raises(MissingFile) as err:
        write_report(run)
    fix = REQUIRED[name]
    assert name in str(err.value) and err.value.fix is fix and str(err.value).endswith(fix.value)
    assert "python -m" not in str(err.value)  # the API's words; the command line adds the command
    assert render(err.value).endswith(f"{fix.value}: `{command_for(fix, run)}`")
    assert not (run / "report/index.html").exists() and not (run / "report/metrics.json").exists()


def test_a_summary_without_a_key_is_a_user_error(tmp_path):
    run = make_run(tmp_path)
    (run / "stage1/summary.json").write_text(json.dumps({k: v for k, v in SUMMARY.items() if k != "perplexity"}))
    with pytest.raises(UserError, match="summary.json lacks perplexity"):
        write_report(run)


def test_stages_with_different_codebook_sizes_are_a_user_error(tmp_path):
    run = make_run(tmp_path)
    (run / "stage2/bits_per_code.json").write_text(json.dumps({**BITS, "num_embeddings": 2 * K}))
    with pytest.raises(UserError, match="out of date"):
        write_report(run)


# ---------------------------------------------------------------- the field's units: bits/dim, Inception FID, novelty

BPD = {"learned": 4.1, "marginal": 4.4, "uniform": 4.5, "distortion": 3.9}


def restamp(run, name, extra, expected):
    """Add ``extra`` to a stamped JSON input of the run and stamp it again with ``expected``."""
    obj = {k: v for k, v in json.loads((run / name).read_text()).items() if k != "computed_from"}
    (run / name).write_text(json.dumps(stamp({**obj, **extra}, expected)))


def test_bits_per_dim_are_in_metrics_and_drawn_as_rate_plus_distortion(tmp_path):
    run = make_run(tmp_path)
    restamp(run, "stage2/bits_per_code.json", {"bits_per_dim": BPD, "likelihood": "logistic", "learned_train": 2.2},
            sources.bits(RunPaths(run)))
    metrics = write_report(run)
    assert metrics["bits_per_dim"] == BPD and metrics["likelihood"] == "logistic"
    assert metrics["bits_per_code"]["learned_train"] == 2.2
    page = (run / "report/index.html").read_text()
    assert "Bits per dimension: rate + distortion" in page and embedded(page, run / "report/bits_per_dim.png")
    assert "upper bound" in page and "deterministic" in page and "discretised logistic" in page
    assert "<td class='num'>0.200</td><td class='num'>4.100</td>" in page  # learned: rate 4.1 - 3.9, total 4.1
    assert "2.200 (+0.300)" in page  # the learned prior's train bits and its val - train gap


def test_without_bits_per_dim_the_section_is_left_out(report):
    run, metrics = report
    assert metrics["bits_per_dim"] is None
    assert "Bits per dimension" not in (run / "report/index.html").read_text()


def test_each_fd_says_its_sampling_settings_and_the_sweep_has_a_table(tmp_path):
    run = make_run(tmp_path, temperatures=(0.5, 1.0))
    config = load_config(run / "config.yaml")
    restamp(run, "report/quality.json", {"fd_learned_T0.5": 9.0, "fd_learned_T1": 6.0,
                                         "fd_by_draw": {"learned": [5.0, 6.5, 6.5], "learned_T1": [5.0, 6.5, 6.5]},
                                         "sampling": {"temperature": 1.0, "top_k": None, "top_p": 0.9}},
            sources.quality(RunPaths(run), config))
    metrics = write_report(run)
    assert metrics["sample_quality"]["fd_learned_by_temperature"] == {"0.5": 9.0, "1": 6.0}
    assert metrics["sample_quality"]["fd_learned_draws"] == [5.0, 6.5, 6.5]
    page = (run / "report/index.html").read_text()
    assert "learned prior (T = 1, top-k off, top-p 0.9)" in page
    assert "mean over 3 independent sets (each between 5 and 6.5)" in page
    sweep = page[page.index("Temperature sweep"):]
    # T = 0.5: 9.0, over the perfect prior's 4.0
    assert re.search(r"<td class='num'>0.5</td><td class='num'>9.000</td><td class='num'>2.25</td>", sweep)
    assert "one set of" in sweep and "(T = 1, top-k off, top-p 0.9), where it is the mean of the learned-prior " \
        "row's 3 sets" in sweep  # the sweep's other temperatures are single sets, and it says so


def test_inception_fid_is_reported_when_current_and_left_out_when_stale(tmp_path):
    run = make_run(tmp_path)
    config = load_config(run / "config.yaml")
    fid = {"fid_inception_reconstructions": 3.0, "fid_inception_learned": 12.5, "fid_inception_marginal": 80.0,
           "fid_inception_uniform": 150.0, "images": 200}
    (run / "report/inception_fid.json").write_text(json.dumps(stamp(fid, sources.inception(RunPaths(run), config, 200))))
    metrics = write_report(run)
    assert metrics["sample_quality"]["fid_inception_learned"] == 12.5
    assert metrics["sample_quality"]["fid_inception_images"] == 200
    page = (run / "report/index.html").read_text()
    assert "Inception FID" in page and "<td class='num'>12.50</td>" in page
    stale = sources.inception(RunPaths(run), config, 200)
    stale["inputs"]["stage2/checkpoint.pt"] = "0" * 64  # computed from another prior
    (run / "report/inception_fid.json").write_text(json.dumps(stamp(fid, stale)))
    metrics = write_report(run)
    assert "fid_inception_learned" not in metrics["sample_quality"]
    assert "out of date" in (run / "report/index.html").read_text()


def test_novelty_is_in_metrics_and_samples_are_shown_above_their_neighbours(tmp_path):
    run = make_run(tmp_path)
    novelty = {"space": "pixel", "median_nn_distance_samples": 0.12, "median_nn_distance_val": 0.11,
               "copy_fraction": 0.02, "copy_threshold": 0.05, "samples": 200, "train_images": 9000,
               "feature": {"median_nn_distance_samples": 1.5, "median_nn_distance_val": 1.2, "copy_fraction": 0.01}}
    restamp(run, "report/quality.json", {"novelty": novelty}, sources.quality(RunPaths(run), load_config(run / "config.yaml")))
    for i, name in enumerate(("typical", "closest")):
        grid(run / f"report/nearest_{name}.png", 30 + i)
    metrics = write_report(run)
    assert metrics["novelty"] == novelty
    page = (run / "report/index.html").read_text()
    assert "Novelty" in page and "2.0%" in page and "pixel (RMS difference" in page
    assert embedded(page, run / "report/nearest_typical.png") and embedded(page, run / "report/nearest_closest.png")


@pytest.mark.parametrize("row, words", [('["step", 10]', "line 2 is not a metrics row (a JSON list, not an object)"),
                                        ('{"step": "ten"}', "line 2 is not a metrics row (step 'ten' is not a count)"),
                                        ('{"step": 20, "loss": {"a": 1}}', "line 2 is not a metrics row (loss holds"),
                                        ("{oops", "line 2 is not JSON")])
def test_a_malformed_metrics_row_is_a_one_line_error_naming_file_and_line(tmp_path, cli, row, words):
    run = make_run(tmp_path)
    lines = (run / "stage2/metrics.jsonl").read_text().splitlines()
    (run / "stage2/metrics.jsonl").write_text("\n".join([lines[0], row, *lines[1:]]) + "\n")
    one_line_error(cli("pipeline", "report", "--run", str(run)), "stage2/metrics.jsonl " + words)


def test_a_torn_last_metrics_row_is_dropped_quietly(tmp_path, cli):
    run = make_run(tmp_path)
    with open(run / "stage1/metrics.jsonl", "a") as f:
        f.write('{"step": 110, "lo')  # a kill while appending
    assert cli("pipeline", "report", "--run", str(run)).returncode == 0
