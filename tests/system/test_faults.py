"""Faults and hostile inputs: a full or read-only disk, SIGTERM, foreign checkpoints, damaged files, outputs
that would overwrite something, and reproducibility down to the byte."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import shutil
import subprocess

import pytest
import torch

from data.checkpoint import FORMAT_VERSION as CHECKPOINT_FORMAT
from data.io import sha256_file

from tests.helpers import TINY, make_run, one_line_error, rewrite_checkpoint, run_cli, write_codes


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` (the tests run as root): a disk that fills up, or a read-only one."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


def tree_size(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def hashes(path) -> dict:
    """sha256 of every file of a run but its lock file (which holds the last writer's pid)."""
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()
            and p.name != ".lock"}


# ---------------------------------------------------------------- the disk


def test_a_full_disk_while_encoding_is_a_clean_error_that_keeps_earlier_files(tiny_run, tmp_path):
    shutil.rmtree(tiny_run / "codes")
    with tmpfs(tmp_path / "disk", f"{tree_size(tiny_run) // 1024 + 24}k") as disk:
        run = disk / "run"
        shutil.copytree(tiny_run, run)
        before = hashes(run)
        result = run_cli("stage1_vqvae", "encode", "--run", str(run))
        one_line_error(result, "no space left on the device")
        assert "Segmentation" not in result.stderr and result.returncode == 2
        assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*.tmp"))
        assert {k: v for k, v in hashes(run).items() if not k.startswith("codes/")} == before


def test_a_full_or_read_only_disk_while_writing_a_picture_is_a_clean_error(finished_run, tmp_path):
    with tmpfs(tmp_path / "full", "4k") as full:
        result = run_cli("pipeline", "sample", "--run", str(finished_run), "--n", "64", "--out", str(full / "g.png"))
        one_line_error(result, "no space left on the device")
        assert os.listdir(full) == []
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        result = run_cli("pipeline", "sample", "--run", str(finished_run), "--n", "4", "--out", str(ro / "g.png"))
        one_line_error(result, "read-only file system")


# ---------------------------------------------------------------- signals


def test_sigterm_during_encode_removes_the_temporary_file_and_keeps_the_others(tiny_run, cli, monkeypatch):
    import stage1_vqvae.encode as encode

    before = sha256_file(tiny_run / "codes" / "val.h5")
    real_append = encode.CodeWriter.append

    def append_then_terminated(self, *args, **kwargs):
        real_append(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from outside, after one written batch

    monkeypatch.setattr(encode.CodeWriter, "append", append_then_terminated)
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run), "--force", "--batch-size", "100")
    assert result.returncode == 143 and "terminated" in result.stderr
    assert sorted(p.name for p in (tiny_run / "codes").iterdir()) == ["train.h5", "val.h5"]
    assert sha256_file(tiny_run / "codes" / "val.h5") == before


# ---------------------------------------------------------------- files of the wrong kind or shape


def test_a_checkpoint_of_another_kind_shape_or_format_is_a_one_line_error(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.copy(run / "stage2" / "checkpoint.pt", run / "stage1" / "checkpoint.pt")
    one_line_error(run_cli("stage1_vqvae", "encode", "--run", str(run), "--force"),
                   "is a stage-2 checkpoint, not a stage-1 checkpoint")
    shutil.copy(finished_run / "stage1" / "checkpoint.pt", run / "stage1" / "checkpoint.pt")
    # the weights no longer fit the model the config describes
    rewrite_checkpoint(run / "stage1" / "checkpoint.pt", lambda state: state["model_config"].update(hidden=24))
    one_line_error(run_cli("stage1_vqvae", "encode", "--run", str(run), "--force"), "do not fit")
    rewrite_checkpoint(run / "stage1" / "checkpoint.pt", lambda state: state.update(format_version=99))
    one_line_error(run_cli("stage1_vqvae", "encode", "--run", str(run), "--force"),
                   f"has format_version 99; this version reads {CHECKPOINT_FORMAT}")
    torch.save({"model": 1}, run / "stage2" / "checkpoint.pt")  # unpickles, but is no checkpoint of ours
    one_line_error(run_cli("stage2_prior", "evaluate", "--run", str(run)), "stage2/checkpoint.pt is not a checkpoint")


def test_empty_code_files_and_negative_labels_are_one_line_errors(tmp_path, cli):
    run = make_run(tmp_path / "run")
    write_codes(run / "codes" / "val.h5", torch.zeros(0, 6, 6, dtype=torch.int64), split="val")
    one_line_error(cli("stage2_prior", "train", "--run", str(run)), "holds no code grids")
    run = make_run(tmp_path / "run2")
    write_codes(run / "codes" / "train.h5", torch.zeros(8, 6, 6, dtype=torch.int64), torch.full((8,), -1))
    one_line_error(cli("stage2_prior", "train", "--run", str(run)), "negative label")


def test_a_val_file_holding_the_train_split_is_refused(tmp_path, cli):
    run = make_run(tmp_path / "run")
    shutil.copy(run / "codes" / "train.h5", run / "codes" / "val.h5")
    one_line_error(cli("stage2_prior", "train", "--run", str(run)), "holds the 'train' split, not 'val'")


@pytest.mark.parametrize("name, change", [
    ("stage2/bits_per_code.json", {"learned": "many"}),
    ("report/quality.json", {"fd_learned": None}),
    ("stage1/summary.json", {"code_counts": ["a", "b"]}),
])
def test_report_inputs_with_wrong_value_types_are_one_line_errors(finished_run, tmp_path, name, change):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / name
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    one_line_error(run_cli("pipeline", "report", "--run", str(run)), name.split("/")[1], "must be numbers")


# ---------------------------------------------------------------- outputs that would overwrite something


def test_sample_outputs_never_overwrite_without_force_nor_ever_the_runs_own_files(finished_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = hashes(run)
    out = tmp_path / "g.png"
    out.write_bytes(b"mine")
    one_line_error(cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(out)), "--force")
    assert out.read_bytes() == b"mine"
    assert cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(out), "--force").returncode == 0
    for own in ("codes/train.h5", "stage1/reconstructions.png", "samples/learned.png", "report/stage1_curves.png"):
        flag = "--codes" if own.endswith(".h5") else "--out"
        one_line_error(cli("pipeline", "sample", "--run", str(run), "--n", "4", flag, str(run / own), "--force"),
                       "part of the run")
    assert hashes(run) == before
    (tmp_path / "folder.png").mkdir()
    one_line_error(cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "folder.png")),
                   "is a directory")
    one_line_error(cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(out / "g.png"), "--force"),
                   "is a file, not a folder")


def test_more_samples_than_fit_a_grid_stream_to_files_in_batches(finished_run, tmp_path, cli):
    one_line_error(cli("pipeline", "sample", "--run", str(finished_run), "--prior", "marginal", "--n", "1025"),
                   "too many for one grid picture")
    result = cli("pipeline", "sample", "--run", str(finished_run), "--prior", "marginal", "--n", "1030",
                 "--codes", str(tmp_path / "c.h5"))
    assert result.returncode == 0, result.stderr
    from data import load_codes

    codes, _, _ = load_codes(tmp_path / "c.h5")
    assert codes.shape[0] == 1030


def test_sampling_in_batches_gives_the_same_samples(finished_run):
    from pipeline import VQPriorPipeline

    pipe = VQPriorPipeline.from_run(finished_run, "cpu")
    for prior in ("learned", "marginal"):
        whole = pipe(7, prior, seed=5)
        parts = list(pipe.generate(7, prior, seed=5, batch_size=3))
        assert [len(p.codes) for p in parts] == [3, 3, 1]
        assert torch.equal(torch.cat([p.codes for p in parts]), whole.codes)


# ---------------------------------------------------------------- reproducibility


def test_identical_runs_write_byte_identical_checkpoints_and_record_threads(tmp_path):
    for name in ("a", "b"):
        result = run_cli("stage1_vqvae", "train", "--config", str(TINY), "--run", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    a, b = (tmp_path / name / "stage1" / "checkpoint.pt" for name in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    summary = json.loads((tmp_path / "a" / "stage1" / "summary.json").read_text())
    assert summary["threads"] == torch.get_num_threads() and summary["device"] == "cpu"


@pytest.fixture(scope="module")
def finished_run(fast_run):
    return fast_run
