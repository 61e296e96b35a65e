"""The run directory: config resolution on resume, staleness, one writer per run, failed starts.

One tiny job (``python -m pipeline run --config tiny``, fewer steps) runs once for the module;
every test that changes it works on its own copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.config import Config
from data.config_files import load_config, shipped_configs
from data.provenance import file_hash
from data.provenance import recorded
from data.rundir import run_lock

from tests.helpers import FAST, ROOT, TINY, one_line_error, private_copy, run_cli

STEPS = 6  # stage-2 steps of helpers.FAST (tiny.yaml has 20; fewer keep the tests fast)
MORE = 12  # the continued prior


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def finished(fast_run) -> Path:
    """A finished tiny run (the ``fast_run`` fixture), made by the command a user types; read only."""
    return fast_run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A private copy of the finished run (mtimes kept) that a test may change."""
    return private_copy(finished, tmp_path)


def snapshot(run: Path, skip=lambda rel: False) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file() and not skip(str(p.relative_to(run)))}


def stage2_step(run: Path) -> int:
    return torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)["step"]


# ---------------------------------------------------------------- 1. the shipped default config


def test_default_yaml_states_exactly_the_built_in_defaults():
    assert load_config("default") == Config()
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


# ---------------------------------------------------------------- 2. settings a finished stage used are frozen


@pytest.mark.parametrize("override", ["stage1.hidden=32", "data.val_fraction=0.2", "run.seed=5"])
def test_resume_refuses_to_change_a_setting_of_a_finished_stage(run, cli, override):
    before = (run / "config.yaml").read_bytes()
    files = snapshot(run, skip=lambda rel: rel == ".lock")
    line = one_line_error(cli("pipeline", "run", "--run", str(run), "--resume", "--set", override))
    assert override.split("=")[0] in line
    assert (run / "config.yaml").read_bytes() == before
    assert snapshot(run, skip=lambda rel: rel == ".lock") == files


# ---------------------------------------------------------------- 3. continuing a finished prior


def test_resume_with_more_stage2_steps_continues_the_prior_and_redoes_what_depends_on_it(run, cli):
    old_bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    assert stage2_step(run) == STEPS
    result = cli("pipeline", "run", "--run", str(run), "--resume", "--set", f"stage2.steps={MORE}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[stage 1: VQ-VAE] current, skipped" in out
    assert f"[stage 2: prior] continuing from {STEPS} to {MORE} steps" in out
    assert "stage-2 checkpoint changed since bits_per_code.json" in out
    assert "stage-2 checkpoint changed since learned.png" in out  # the samples are redone
    assert "stage-2 checkpoint changed since quality.json" in out  # and their quality
    assert stage2_step(run) == MORE

    new_sha = file_hash(run / "stage2" / "checkpoint.pt")
    derived = ["stage2/bits_per_code.json", "report/quality.json", "report/metrics.json",
               "samples/learned.png", "samples/marginal.png", "samples/uniform.png",
               "samples/temperature_0.8.png", "samples/temperature_0.97.png"]
    for name in derived:
        stamp = recorded(run / name)
        assert stamp is not None, name
        assert stamp["inputs"]["stage2/checkpoint.pt"] == new_sha, name
    assert load_config(run / "config.yaml").stage2.steps == MORE
    new_bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    assert new_bits["learned"] != old_bits["learned"]
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["bits_per_code"]["learned"] == pytest.approx(new_bits["learned"])


# ---------------------------------------------------------------- 4. an unchanged run is not redone


def test_resume_of_an_unchanged_finished_run_rewrites_nothing(run, cli):
    def rewritten_by_report(rel: str) -> bool:
        return rel in (".lock", "report/metrics.json", "report/index.html") or (
            rel.startswith("report/") and rel.endswith(".png"))

    before = snapshot(run, skip=rewritten_by_report)
    assert "stage2/checkpoint.pt" in before and "samples/learned.png" in before and "codes/val.h5" in before
    result = cli("pipeline", "run", "--run", str(run), "--resume")
    assert result.returncode == 0, result.stderr
    after = snapshot(run, skip=rewritten_by_report)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []
    for step in ("stage 1: VQ-VAE", "stage 2: prior", "evaluate priors", "samples", "sample quality"):
        assert f"[{step}] current, skipped" in result.stdout, step


def test_resume_with_new_sample_settings_redoes_only_what_uses_them(run, cli):
    keep = ["stage1/checkpoint.pt", "stage2/checkpoint.pt", "stage2/bits_per_code.json", "report/quality.json",
            "codes/train.h5", "codes/val.h5", "classifier/checkpoint.pt"]
    before = {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in keep}
    old_grid = (run / "samples" / "learned.png").read_bytes()
    result = cli("pipeline", "run", "--run", str(run), "--resume", "--set", "sample.n=4")
    assert result.returncode == 0, result.stderr
    assert "[samples] settings n changed since learned.png" in result.stdout
    assert "[sample quality] current, skipped" in result.stdout  # the Frechet distances do not use sample.n
    assert "[evaluate priors] current, skipped" in result.stdout
    assert {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in keep} == before
    assert (run / "samples" / "learned.png").read_bytes() != old_grid
    assert recorded(run / "samples" / "learned.png")["settings"]["n"] == 4
    assert load_config(run / "config.yaml").sample.n == 4
    assert cli("pipeline", "report", "--run", str(run)).returncode == 0


def test_resuming_a_complete_stage1_keeps_its_checkpoint_and_summary(run, cli):
    """``--resume`` skips a completed stage: the training time and throughput of stage 1 are kept."""
    checkpoint = (run / "stage1" / "checkpoint.pt").read_bytes()
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert summary["train_seconds"] > 0.01 and summary["images_per_s"] is not None
    result = cli("stage1_vqvae", "train", "--run", str(run), "--resume")
    assert result.returncode == 0, result.stderr
    assert (run / "stage1" / "checkpoint.pt").read_bytes() == checkpoint
    after = json.loads((run / "stage1" / "summary.json").read_text())
    assert after["train_seconds"] == summary["train_seconds"]
    assert after["images_per_s"] == summary["images_per_s"]
    assert after == summary


def test_an_interrupted_stage1_freezes_the_data_and_the_model_but_not_the_schedule(run, cli):
    (run / "stage1" / "summary.json").unlink()  # killed after its last checkpoint
    before = (run / "config.yaml").read_bytes()
    for override in ("stage1.hidden=32", "stage1.num_embeddings=64", "data.val_fraction=0.2", "run.seed=1"):
        line = one_line_error(cli("stage1_vqvae", "train", "--run", str(run), "--resume", "--set", override))
        assert override.split("=")[0] in line and "under way" in line
    assert (run / "config.yaml").read_bytes() == before
    from data.rundir import resolve_config

    config = resolve_config(run, None, ["stage1.steps=8", "stage1.lr=0.0005"], resume=True)
    assert config.stage1.steps == 8 and config.stage1.lr == 0.0005
    assert (run / "config.yaml").read_bytes() == before  # resolving writes nothing


# ---------------------------------------------------------------- 5. a stale report input is refused


def test_report_refuses_inputs_of_an_older_prior_but_sample_still_works(run, cli, tmp_path):
    metrics = (run / "report" / "metrics.json").read_bytes()
    trained = cli("stage2_prior", "train", "--run", str(run), "--resume", "--set", f"stage2.steps={MORE}")
    assert trained.returncode == 0, trained.stderr
    assert stage2_step(run) == MORE

    line = one_line_error(cli("pipeline", "report", "--run", str(run)))
    assert "bits_per_code.json" in line
    assert "stage-2 checkpoint changed" in line
    assert f"python -m pipeline run --run {run} --resume" in line
    assert (run / "report" / "metrics.json").read_bytes() == metrics

    png = tmp_path / "x.png"
    sampled = cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(png))
    assert sampled.returncode == 0, sampled.stderr
    assert png.is_file()

    # evaluating alone is not enough: the samples and their quality still describe the older prior
    assert cli("stage2_prior", "evaluate", "--run", str(run)).returncode == 0
    line = one_line_error(cli("pipeline", "report", "--run", str(run)))
    assert "stage-2 checkpoint changed" in line and ("quality.json" in line or ".png" in line)
    # the command the message gives brings everything up to date, and then the report is written
    refreshed = cli("pipeline", "run", "--run", str(run), "--resume")
    assert refreshed.returncode == 0, refreshed.stderr
    assert "[stage 2: prior] current, skipped" in refreshed.stdout
    assert "[evaluate priors] current, skipped" in refreshed.stdout
    report = cli("pipeline", "report", "--run", str(run))
    assert report.returncode == 0, report.stderr
    stamp = recorded(run / "report" / "metrics.json")
    assert stamp["inputs"]["stage2/checkpoint.pt"] == file_hash(run / "stage2" / "checkpoint.pt")


# ---------------------------------------------------------------- 6. what stage 2 allows on resume


def test_stage2_steps_can_only_grow(run, cli):
    before = (run / "config.yaml").read_bytes()
    line = one_line_error(cli("pipeline", "run", "--run", str(run), "--resume", "--set", f"stage2.steps={STEPS - 2}"))
    assert "can only grow" in line and "stage2.steps" in line
    assert (run / "config.yaml").read_bytes() == before
    assert stage2_step(run) == STEPS


def test_a_complete_prior_refuses_new_training_settings_without_more_steps(run, cli):
    before = (run / "config.yaml").read_bytes()
    line = one_line_error(cli("pipeline", "run", "--run", str(run), "--resume", "--set", "stage2.lr=0.001"))
    assert "stage2.lr" in line and "stage2.steps" in line
    line = one_line_error(cli("stage2_prior", "train", "--run", str(run), "--resume", "--set", "stage2.lr=0.001"))
    assert "stage2.lr" in line
    assert (run / "config.yaml").read_bytes() == before


def test_the_prior_architecture_is_frozen_once_stage2_began(run, cli):
    before = (run / "config.yaml").read_bytes()
    # even with more steps, which would otherwise allow new settings
    line = one_line_error(cli("pipeline", "run", "--run", str(run), "--resume",
                              "--set", "stage2.hidden=32", "--set", f"stage2.steps={MORE}"))
    assert "stage2.hidden" in line
    # an interrupted prior (checkpoint, no summary) is frozen too
    (run / "stage2" / "summary.json").unlink()
    line = one_line_error(cli("stage2_prior", "train", "--run", str(run), "--resume", "--set", "stage2.hidden=32"))
    assert "stage2.hidden" in line
    assert (run / "config.yaml").read_bytes() == before
    assert stage2_step(run) == STEPS


# ---------------------------------------------------------------- 7. config errors: one line, nothing created


BAD_SETS = {
    "list": ["sample.temperatures=[0.5, abc]"],
    "nan-string": ["stage1.lr=nan"],
    "nan": ["stage1.lr=.nan"],
    "inf": ["stage2.lr=.inf"],
    "negative-lr": ["stage1.lr=-1"],
    "zero-lr": ["stage2.lr=0"],
    "image-size": ["data.image_size=4"],
    "huge-seed": ["run.seed=99999999999999999999"],
    "even-kernel": ["stage2.kernel_size=4"],
}


@pytest.mark.parametrize("case", list(BAD_SETS))
@pytest.mark.parametrize("command", [("stage1_vqvae", "train"), ("pipeline", "run")])
def test_a_bad_set_value_is_one_error_line_and_creates_nothing(cli, tmp_path, case, command):
    new = tmp_path / "new"
    overrides = BAD_SETS[case]
    line = one_line_error(cli(*command, "--config", "tiny", "--run", str(new), *sets(overrides)))
    assert overrides[0].split("=")[0] in line
    assert not new.exists()


@pytest.mark.parametrize("content, words", [
    (b"- stage1\n- stage2\n", "mapping"),
    (b"\xff\xfestage1:\n  steps: 3\n", "UTF-8"),
    (b"stage1:\n  steps: [1\n", "YAML"),
    (b"stage1:\n  stepz: 3\n", "stage1.steps"),
    (b"stage1: 3\n", "stage1"),
])
@pytest.mark.parametrize("command", [("stage1_vqvae", "train"), ("pipeline", "run")])
def test_a_bad_config_file_is_one_error_line_and_creates_nothing(cli, tmp_path, content, words, command):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    new = tmp_path / "new"
    line = one_line_error(cli(*command, "--config", str(path), "--run", str(new)))
    assert words in line
    assert not new.exists()


# ---------------------------------------------------------------- 8. one writer per run


def test_a_second_writer_is_refused_while_the_lock_is_held(run):
    with run_lock(run):
        result = run_cli("pipeline", "run", "--run", str(run), "--resume")
    line = one_line_error(result)
    assert f"run directory in use (pid {os.getpid()})" in line


def test_readers_need_no_lock_while_a_writer_holds_it(run, tmp_path):
    with run_lock(run):
        elsewhere = run_cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "s.png"))
        verified = run_cli("pipeline", "verify", "--run", str(run))
        into_the_run = run_cli("pipeline", "sample", "--run", str(run), "--n", "4")
    assert elsewhere.returncode == 0 and (tmp_path / "s.png").is_file(), elsewhere.stderr
    assert verified.returncode == 0, verified.stderr
    assert f"run directory in use (pid {os.getpid()})" in one_line_error(into_the_run)


def test_a_lock_left_by_a_killed_process_does_not_block(run, cli):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom data.rundir import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n",
         str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (run / ".lock").read_text().strip() == str(holder.pid)
        blocked = cli("pipeline", "report", "--run", str(run))
        assert f"run directory in use (pid {holder.pid})" in one_line_error(blocked)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / ".lock").read_text().strip() == str(holder.pid)  # the dead writer's lock file is still there
    report = cli("pipeline", "report", "--run", str(run))
    assert report.returncode == 0, report.stderr
    assert (run / ".lock").read_text().strip() == str(os.getpid())


# ---------------------------------------------------------------- 9. a failed first start leaves nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_failed_first_start_leaves_no_run_directory(cli, tmp_path):
    new = tmp_path / "D"
    line = one_line_error(cli("pipeline", "run", "--config", "tiny", "--run", str(new), "--set", "run.device=cuda"))
    assert "cuda" in line
    assert not new.exists()
    # the same command fails the same way (not "already holds output" or "in use")
    line = one_line_error(cli("stage1_vqvae", "train", "--config", "tiny", "--run", str(new),
                              "--set", "run.device=cuda"))
    assert "cuda" in line and not new.exists()
    # and the directory can be started afresh
    result = cli("stage1_vqvae", "train", "--config", "tiny", "--run", str(new), "--set", "stage1.steps=1")
    assert result.returncode == 0, result.stderr
    assert (new / "stage1" / "checkpoint.pt").is_file() and (new / "config.yaml").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_failed_first_start_in_new_nested_folders_leaves_none_of_them(cli, tmp_path):
    new = tmp_path / "a" / "b" / "D"
    one_line_error(cli("stage1_vqvae", "train", "--config", "tiny", "--run", str(new), "--set", "run.device=cuda"))
    assert not new.exists()
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- 10. shipped configs by name


def test_pipeline_run_accepts_a_shipped_config_by_name(finished):
    # the module's run was started with `--config tiny` (from the repository root, where no file "tiny" exists)
    assert not (ROOT / "tiny").exists()
    assert load_config(finished / "config.yaml") == load_config(TINY, FAST)
    assert load_config("tiny") == load_config(TINY) and load_config("tiny.yaml") == load_config(TINY)


def test_an_unknown_config_name_is_one_line_listing_the_shipped_configs(cli, tmp_path):
    new = tmp_path / "new"
    line = one_line_error(cli("pipeline", "run", "--config", "nosuch", "--run", str(new)))
    assert "nosuch" in line
    names = shipped_configs()
    assert {"default", "tiny", "mnist", "cifar10", "cifar10_ema"} <= set(names)
    assert all(name in line for name in names)
    assert not new.exists()
    line = one_line_error(cli("pipeline", "run", "--config", "nosuch"))  # no --run: still one line
    assert "nosuch" in line
