"""The ``vqprior`` console command, and the guard on ``python -m`` against working-folder stand-ins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FAST, one_line_error, run_cli

VQPRIOR = Path(sys.executable).parent / "vqprior"  # installed by `pip install -e .` beside this Python
# A user's module that must never run: importing it leaves a marker file and fails loudly.
LOUD = "import pathlib; pathlib.Path(__file__).with_suffix('.imported').touch(); raise RuntimeError('imported {name}')\n"


def vqprior(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VQPRIOR), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def user_folder(tmp_path: Path, *modules: str) -> Path:
    """A working folder holding the user's own ``<name>.py`` for each of ``modules``."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in modules:
        (folder / f"{name}.py").write_text(LOUD.format(name=name))
    return folder


def test_vqprior_is_installed_and_its_help_lists_every_command(tmp_path):
    result = vqprior("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("run", "sample", "report", "export", "fid", "stage1 train", "stage1 encode", "stage2 train",
                    "stage2 evaluate"):
        assert f"\n  {command} " in result.stdout, command


def test_each_vqprior_command_has_its_own_help_under_its_own_name(tmp_path):
    for args, usage in ((("run", "--help"), "usage: vqprior run"),
                        (("stage1", "encode", "--help"), "usage: vqprior stage1 encode"),
                        (("stage2", "train", "--help"), "usage: vqprior stage2 train")):
        result = vqprior(*args, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith(usage), (args, result.stdout[:200])


def test_an_unknown_or_missing_command_is_a_one_line_error(tmp_path):
    one_line_error(vqprior("train", cwd=tmp_path), "unknown command 'train'", "stage1", "vqprior --help")
    missing = vqprior(cwd=tmp_path)
    assert missing.returncode == 2 and "usage: vqprior COMMAND" in missing.stderr


def test_vqprior_errors_are_one_line_and_name_the_fix_in_its_own_words(tmp_path):
    nowhere = tmp_path / "nowhere"
    line = one_line_error(vqprior("stage2", "evaluate", "--run", str(nowhere), cwd=tmp_path), "not a run directory")
    assert line.endswith(f"train stage 1: `vqprior stage1 train --config FILE --run {nowhere}`"), line
    line = one_line_error(run_cli("stage2_prior", "evaluate", "--run", str(nowhere), cwd=tmp_path))
    assert line.endswith(f"train stage 1: `python -m stage1_vqvae train --config FILE --run {nowhere}`"), line
    (nowhere / "config.yaml").parent.mkdir()
    (nowhere / "config.yaml").write_text("{}")
    line = one_line_error(vqprior("stage2", "evaluate", "--run", str(nowhere), cwd=tmp_path))
    assert line.endswith(f"train the prior: `vqprior stage2 train --run {nowhere}`"), line


def test_vqprior_runs_the_whole_job_from_a_folder_holding_data_py_and_pipeline_py(tmp_path):
    folder = user_folder(tmp_path, "data", "pipeline")
    result = vqprior("run", "--config", "tiny", "--run", "R", *[a for item in FAST for a in ("--set", item)],
                     cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((folder / "R" / "report" / "metrics.json").read_text())["bits_per_code"]["learned"] > 0
    assert (folder / "R" / "report" / "index.html").is_file()
    assert not list(folder.glob("*.imported"))  # neither of the user's files ran


@pytest.mark.parametrize("module", ["pipeline", "stage1_vqvae", "stage2_prior"])
def test_python_m_from_a_folder_holding_data_py_names_it_and_exits_2(tmp_path, module):
    folder = user_folder(tmp_path, "data")
    args = ("run", "--config", "tiny") if module == "pipeline" else ("--help",)
    line = one_line_error(run_cli(module, *args, cwd=folder), str(folder / "data.py"), "vqprior")
    assert "another folder" in line
    assert not (folder / "data.imported").exists()  # found without running the user's file


def test_python_m_refuses_a_data_package_in_the_working_folder(tmp_path):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "__init__.py").write_text(LOUD.format(name="data"))
    one_line_error(run_cli("stage1_vqvae", "encode", "--run", "R", cwd=folder), str(folder / "data"), "'data'",
                   "vqprior")
    assert not (folder / "data" / "__init__.imported").exists()


def test_a_data_folder_of_images_is_refused_only_when_it_would_stand_in(tmp_path):
    """A ``data/`` without ``__init__.py`` is a namespace package: under an editable install it is
    found before ours (refused), under a regular install ours comes first (the command runs on)."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "image.png").write_bytes(b"")
    line = one_line_error(run_cli("stage1_vqvae", "encode", "--run", "R", cwd=folder))
    assert "stands in for the package 'data'" in line or "not a run directory" in line, line


def test_importing_our_package_under_a_stand_in_raises_import_error(tmp_path):
    folder = user_folder(tmp_path, "data")
    result = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, ''); import stage2_prior"],
                            capture_output=True, text=True, cwd=folder, timeout=120)
    assert result.returncode == 1 and "ImportError" in result.stderr and str(folder / "data.py") in result.stderr
    assert not (folder / "data.imported").exists()


def test_python_m_from_an_ordinary_folder_is_not_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.py").write_text(LOUD.format(name="train"))
    result = run_cli("pipeline", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m pipeline"), result.stderr
