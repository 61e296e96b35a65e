"""The built wheel is complete: it holds the package data and runs the whole job outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE_DATA = ["configs/default.yaml", "configs/tiny.yaml", "pipeline/templates/report.html",
                "data/fashion_mnist/t10k-images-idx3-ubyte.gz", "data/fashion_mnist/t10k-labels-idx1-ubyte.gz",
                "data/fashion_mnist/LICENSE"]
# what the source copy leaves out: environments, caches, run outputs, earlier builds
SKIP = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", "*.pyc", ".whl", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the checkout (building in place would write build/ into it)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", "-w", str(tmp / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = (tmp / "dist").glob("vqprior-*.whl")
    return built


def test_the_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in PACKAGE_DATA if name not in names]
    assert missing == []
    assert {"pipeline/__main__.py", "stage1_vqvae/__main__.py", "stage2_prior/__main__.py", "data/rundir.py"} <= names
    assert not any(name.startswith(("tests/", "runs/", "benchmarks/")) for name in names)


def test_the_unpacked_wheel_runs_the_whole_job_from_an_empty_folder(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)

    where = python("-c", "import configs, data, pipeline, stage1_vqvae, stage2_prior\n"
                         "for m in (configs, data, pipeline, stage1_vqvae, stage2_prior): print(m.__file__)")
    assert where.returncode == 0, where.stderr
    files = where.stdout.split()
    assert len(files) == 5 and all(Path(f).resolve().is_relative_to(site.resolve()) for f in files), files

    result = python("-m", "pipeline", "run", "--config", "tiny", "--run", "R", "--set", "stage1.steps=4",
                    "--set", "stage2.steps=4", "--set", "sample.fd_samples=16", "--set", "sample.classifier_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "R" / "report" / "index.html").is_file()
    assert (work / "R" / "report" / "metrics.json").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["R"]  # nothing else written into the working folder
