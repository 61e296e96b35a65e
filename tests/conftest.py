"""Shared fixtures: the tiny config and one trained tiny stage-1 run reused by many tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"

torch.set_num_threads(2)
# Image-folder stores go to a fresh cache for the session (inherited by the commands tests run).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vqprior-test-cache-")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` as a user would; returns the completed process (never raises)."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=600)


@pytest.fixture
def cli(capsys):
    """Run a command-line entry point in this process (fast): ``cli("stage1_vqvae", "train", ...)``.

    Goes through the same ``run_main`` wrapper as ``python -m``, so exit codes and the one-line
    ``error:`` output are exactly what a user sees.
    """
    import importlib

    from data.cli import run_main

    def invoke(module: str, *args: str) -> subprocess.CompletedProcess:
        main = importlib.import_module(f"{module}.__main__").main
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, exit_info.value.code or 0, out.out, out.err)

    return invoke


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory) -> Path:
    """A tiny run directory with stage 1 trained and both splits encoded (built once per session)."""
    run = tmp_path_factory.mktemp("template") / "run"
    for args in (("stage1_vqvae", "train", "--config", str(TINY), "--run", str(run)),
                 ("stage1_vqvae", "encode", "--run", str(run))):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return run


def private_copy(run: Path, tmp_path: Path) -> Path:
    """A copy of a shared run directory (modification times kept) that one test may change."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path) -> Path:
    """A private copy of the tiny run that a test may modify."""
    return private_copy(tiny_run_template, tmp_path)


FAST = ["stage1.steps=4", "stage2.steps=6", "sample.fd_samples=16", "sample.classifier_steps=4"]


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory) -> Path:
    """The whole tiny job with fewer steps (``FAST``), run once by the command a user types.

    Shared by several test files: a test that changes it works on its own copy.
    """
    run = tmp_path_factory.mktemp("fast") / "run"
    result = run_cli("pipeline", "run", "--config", "tiny", "--run", str(run),
                     *[arg for item in FAST for arg in ("--set", item)])
    assert result.returncode == 0, result.stderr
    return run


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Assert a refused command: exit 2, one ``error:`` line (progress bars aside) naming ``words``, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
