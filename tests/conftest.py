"""Shared fixtures: an in-process command runner and the tiny runs that many tests reuse."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST, TINY, private_copy, run_cli

torch.set_num_threads(2)
# Image-folder stores go to a fresh cache for the session (inherited by the commands tests run).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vqprior-test-cache-")


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


@pytest.fixture
def tiny_run(tiny_run_template, tmp_path) -> Path:
    """A private copy of the tiny run that a test may modify."""
    return private_copy(tiny_run_template, tmp_path)


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
