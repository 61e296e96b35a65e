"""What tests share besides fixtures: paths, override lists, running a command, checking a refusal,
and synthetic code files a tiny prior learns in seconds. Fixtures are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import torch

from data.codes import CodeWriter
from data import integrity
from data.integrity import seal_user_block
from data.config_files import load_config, save_config

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
FAST = ["stage1.steps=4", "stage2.steps=6", "sample.fd_samples=16", "sample.classifier_steps=4"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` as a user would; returns the completed process (never raises)."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=600)


def private_copy(run: Path, tmp_path: Path) -> Path:
    """A copy of a shared run directory (modification times kept) that one test may change."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Assert a refused command: exit 2, one ``error:`` line (progress bars aside) naming ``words``, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def edit_code_file(path: Path):
    """Open a code file for writing with h5py, and seal it again afterwards: an edit, not damage."""
    with h5py.File(path, "r+") as f:
        yield f
    seal_user_block(path)


def rewrite_checkpoint(path: Path, change) -> dict:
    """Apply ``change(state)`` to a checkpoint's entries and save it sealed again: an edit, not damage."""
    state = torch.load(path, weights_only=True)
    state.pop(integrity.KEY, None)
    change(state)
    torch.save(integrity.seal(state), path)
    return state


# ---------------------------------------------------------------- synthetic code files for stage 2

SHA = "ab" * 32
TINY_PRIOR = ["stage2.hidden=16", "stage2.layers=2", "stage2.kernel_size=3", "stage2.batch_size=16",
              "stage2.steps=12", "stage2.min_epochs=0", "stage2.warmup_steps=2", "stage2.log_every=4",
              "stage2.eval_every=6", "stage2.checkpoint_every=4", "run.device=cpu"]


def stripes(n: int, grid=(6, 6), num_embeddings: int = 16, seed: int = 0):
    """Grids z_ij = (a + i + (y+1) j) mod K with a random offset a and a label y in {0, 1, 2}.

    Given the label and one code, every other code is determined; without the label the
    first row reveals it. The marginal is close to uniform, so context is everything.
    """
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randint(num_embeddings, (n, 1, 1), generator=gen)
    labels = torch.randint(3, (n,), generator=gen)
    i = torch.arange(grid[0]).view(1, -1, 1)
    j = torch.arange(grid[1]).view(1, 1, -1)
    return (offset + i + (labels.view(-1, 1, 1) + 1) * j) % num_embeddings, labels


def write_codes(path: Path, codes: torch.Tensor, labels=None, num_embeddings: int = 16, sha: str = SHA,
                split: str = "train") -> None:
    with CodeWriter(path, num_embeddings=num_embeddings, embedding_dim=8, grid=tuple(codes.shape[1:]),
                    dataset="synthetic", split=split, stage1_checkpoint_sha256=sha,
                    has_labels=labels is not None) as writer:
        writer.append(codes, labels)


def make_run(run_dir: Path, n_train: int = 256, n_val: int = 64, labelled: bool = True, grid=(6, 6),
             num_embeddings: int = 16) -> Path:
    """A run directory as stage 1 leaves it: config.yaml and codes/{train,val}.h5."""
    train, train_labels = stripes(n_train, grid, num_embeddings, seed=0)
    val, val_labels = stripes(n_val, grid, num_embeddings, seed=1)
    write_codes(run_dir / "codes" / "train.h5", train, train_labels if labelled else None, num_embeddings)
    write_codes(run_dir / "codes" / "val.h5", val, val_labels if labelled else None, num_embeddings, split="val")
    save_config(load_config(overrides=[f"stage1.num_embeddings={num_embeddings}"]), run_dir / "config.yaml")
    return run_dir
