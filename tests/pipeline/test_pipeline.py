"""The pipeline: the whole job on the tiny config, resume after a crash, and every user error of sample."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from data import load_config, load_codes
from data.errors import UserError
from pipeline import VQPriorPipeline
from pipeline import run as run_module

from tests.helpers import FAST, TINY, edit_code_file, rewrite_checkpoint, run_cli

SPEC_FILES = [
    "config.yaml", "stage1/checkpoint.pt", "stage1/metrics.jsonl", "stage1/reconstructions.png",
    "codes/train.h5", "codes/val.h5", "stage2/checkpoint.pt", "stage2/metrics.jsonl",
    "samples/learned.png", "samples/marginal.png", "samples/uniform.png",
    "report/metrics.json", "report/index.html",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The whole job on the tiny config, run as a user runs it."""
    run = tmp_path_factory.mktemp("pipeline") / "run"
    result = run_cli("pipeline", "run", "--config", str(TINY), "--run", str(run))
    assert result.returncode == 0, result.stderr
    return run


def test_run_writes_every_artifact_of_the_spec(finished_run):
    for name in SPEC_FILES:
        assert (finished_run / name).is_file(), name
    for name in ("stage1/checkpoint.pt", "stage2/checkpoint.pt"):
        torch.load(finished_run / name, weights_only=True)
    assert not list(finished_run.rglob("*.tmp"))
    html = (finished_run / "report" / "index.html").read_text()
    assert "learned" in html and "uniform" in html


def test_metrics_json_has_every_spec_key(finished_run):
    metrics = json.loads((finished_run / "report" / "metrics.json").read_text())
    assert metrics["num_embeddings"] == 32
    assert set(metrics["bits_per_code"]) >= {"learned", "marginal", "uniform"}
    assert metrics["bits_per_code"]["uniform"] == pytest.approx(5.0)  # log2 32
    assert set(metrics["stage1"]) >= {"val_recon_nmse", "perplexity", "codes_used"}
    fd_names = ("learned", "marginal", "uniform", "perfect_prior", "train_images", "reconstructions")
    assert set(metrics["sample_quality"]) >= {f"fd_{n}" for n in fd_names}
    values = [metrics["bits_per_code"][p] for p in ("learned", "marginal", "uniform")]
    values += [metrics["sample_quality"][f"fd_{n}"] for n in fd_names]
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in values)
    draws = metrics["sample_quality"]["fd_learned_draws"]  # sample.fd_draws sets of the learned prior, averaged
    assert len(draws) == 5 and len(set(draws)) == 5  # tiny.yaml: 5
    assert metrics["sample_quality"]["fd_learned"] == pytest.approx(sum(draws) / 5)
    perfect = metrics["sample_quality"]["fd_perfect_prior_draws"]  # as many sets as the learned prior's
    assert len(perfect) == 5 and metrics["sample_quality"]["fd_perfect_prior"] == pytest.approx(sum(perfect) / 5)
    assert metrics["sample_quality"]["fd_learned_over_perfect_prior"] == pytest.approx(
        metrics["sample_quality"]["fd_learned"] / metrics["sample_quality"]["fd_perfect_prior"])
    temperature = load_config(finished_run / "config.yaml").sample.temperature  # in tiny.yaml's sweep
    by_temperature = metrics["sample_quality"]["fd_learned_by_temperature"]
    assert by_temperature[f"{temperature:g}"] == metrics["sample_quality"]["fd_learned"]


def test_fd_draws_of_two_run_seeds_never_share_a_sampling_seed():
    seeds = {}

    def fake_pipe(n, prior, seed, **_):
        seeds.setdefault(run_seed, []).append(seed)
        return type("Result", (), {"images": torch.zeros(n)})()

    for run_seed in (0, 1):
        config = load_config(TINY, [f"run.seed={run_seed}", "sample.fd_draws=100"])
        draws, _ = run_module.learned_draws(fake_pipe, config, torch.zeros(3))
        assert len(draws) == 100 and all(len(d) == 3 for d in draws)
    assert len(set(seeds[0])) == len(set(seeds[1])) == 99  # the first draw is fd_image_sets' own
    assert not set(seeds[0]) & set(seeds[1])


def test_existing_run_directory_is_refused(finished_run, cli):
    result = cli("pipeline", "run", "--config", str(TINY), "--run", str(finished_run))
    assert result.returncode == 2 and "already holds output" in result.stderr and "--resume" in result.stderr


def test_resuming_with_the_other_prior_architecture_is_refused(finished_run, cli):
    result = cli("pipeline", "run", "--run", str(finished_run), "--resume", "--set", "stage2.architecture=transformer")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot change stage2.architecture ('pixelcnn' -> 'transformer')" in result.stderr


def test_resume_after_a_crash_ends_with_the_same_result(finished_run, tmp_path, monkeypatch):
    config = load_config(TINY)
    real = run_module.write_samples

    def crash_after_the_first_grid(pipe, cfg, paths):
        run_module._save_samples(pipe, paths.sample_grid("learned"), cfg.sample.n, "learned", cfg,
                                 cfg.run.seed * 1000, run_module.sources.samples(paths, cfg))
        raise RuntimeError("killed")

    monkeypatch.setattr(run_module, "write_samples", crash_after_the_first_grid)
    with pytest.raises(RuntimeError, match="killed"):
        run_module.run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "report").exists()
    monkeypatch.setattr(run_module, "write_samples", real)
    resumed = run_module.run(config, tmp_path / "run", resume=True)
    expected = json.loads((finished_run / "report" / "metrics.json").read_text())
    # numbers to 1e-6: the reference ran in a subprocess, whose thread count may differ from this one's
    assert resumed["bits_per_code"] == pytest.approx(expected["bits_per_code"], rel=1e-6)
    for key in ("fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform"):
        assert resumed["sample_quality"][key] == pytest.approx(expected["sample_quality"][key], rel=1e-6)
    for name in ("learned", "marginal", "uniform"):
        assert (tmp_path / "run" / "samples" / f"{name}.png").read_bytes() == \
            (finished_run / "samples" / f"{name}.png").read_bytes()


def test_pipeline_object_samples_and_decodes(finished_run):
    pipe = VQPriorPipeline.from_run(finished_run, "cpu")
    out = pipe(n=5, prior="learned", seed=3)
    assert out.codes.shape == (5, 7, 7) and out.images.shape == (5, 1, 28, 28)
    assert torch.equal(out.codes, pipe(n=5, prior="learned", seed=3).codes)  # same seed, same samples
    assert not torch.equal(out.codes, pipe(n=5, prior="learned", seed=4).codes)
    assert torch.equal(out.codes, pipe.sample_codes(5, "learned", seed=3, method="naive"))


def test_sample_command_writes_grid_images_and_codes(finished_run, tmp_path, cli):
    result = cli("pipeline", "sample", "--run", str(finished_run), "--prior", "marginal", "--n", "6",
                 "--seed", "1", "--out", str(tmp_path / "g.png"), "--images-dir", str(tmp_path / "imgs"),
                 "--codes", str(tmp_path / "c.h5"))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "g.png").size[0] > 28
    assert len(list((tmp_path / "imgs").glob("*.png"))) == 6
    codes, labels, info = load_codes(tmp_path / "c.h5", num_embeddings=32)
    assert codes.shape == (6, 7, 7) and labels is None and info.split == "sampled-marginal"


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--top-k", "0"], "--top-k must lie in [1, 32]"),
    (["--top-k", "33"], "--top-k must lie in [1, 32]"),
    (["--top-p", "1.5"], "--top-p must lie in (0, 1], got 1.5"),
    (["--temperature", "inf"], "--temperature must be > 0 and finite, got inf"),
    (["--seed", "-1"], "--seed must lie in [0, 4294967295], got -1"),
    (["--label", "3"], "--label needs a class-conditional learned prior"),
    (["--prior", "uniform", "--label", "1"], "--label needs a class-conditional learned prior"),
    (["--prior", "gaussian"], "invalid choice: 'gaussian'"),
    (["--out", "grid.jpg"], "--out must name a .png file"),
    (["--n", "many"], "invalid int value: 'many'"),
])
def test_each_bad_sample_argument_is_a_one_line_error(finished_run, cli, args, message):
    result = cli("pipeline", "sample", "--run", str(finished_run), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_sample_from_a_missing_run_is_a_user_error(tmp_path, cli):
    result = cli("pipeline", "sample", "--run", str(tmp_path / "nope"))
    assert result.returncode == 2 and "not a run directory" in result.stderr


def test_prior_of_another_vqvae_is_refused(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    def another_vqvae(state):  # same shapes
        state["model"]["quantizer.embedding"] += 1.0

    rewrite_checkpoint(run / "stage1" / "checkpoint.pt", another_vqvae)
    with pytest.raises(UserError, match="trained on codes of a different stage-1 checkpoint"):
        VQPriorPipeline.from_run(run, "cpu")


def test_the_sample_quality_is_out_of_date_when_the_training_codes_change(finished_run, tmp_path):

    from data.provenance import stale_reason
    from data.rundir import RunPaths
    from pipeline import sources

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    paths, config = RunPaths(run), load_config(run / "config.yaml")
    assert stale_reason(paths.quality, sources.quality(paths, config)) is None
    with edit_code_file(paths.codes("train")) as f:  # the perfect prior's sets are drawn from these grids
        f["codes"][0, 0, 0] = (int(f["codes"][0, 0, 0]) + 1) % 32
    assert stale_reason(paths.quality, sources.quality(paths, config)) == "train codes changed since quality.json"


def test_report_command_rewrites_the_report(finished_run, cli):
    (finished_run / "report" / "index.html").unlink()
    result = cli("pipeline", "report", "--run", str(finished_run))
    assert result.returncode == 0 and (finished_run / "report" / "index.html").is_file()


def test_a_whole_run_reads_each_split_once(tmp_path, monkeypatch):
    """The steps of a run share one config and one read of each split (``data.load_split``)."""
    from data import datasets

    reads = []
    read = datasets._read_split

    def counting(cfg, split):
        reads.append(split)
        return read(cfg, split)

    monkeypatch.setattr(datasets, "_read_split", counting)
    run_module.run(load_config(TINY, FAST), tmp_path / "run")
    assert sorted(reads) == ["train", "val"]
    assert (tmp_path / "run" / "report" / "index.html").is_file()
