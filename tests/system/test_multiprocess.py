"""Two processes with gloo on the CPU, in the environment ``accelerate launch --multi_gpu`` sets up.

``accelerate launch --multi_gpu`` starts its processes through torch's elastic launcher
(torchrun), which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for each. The
tests start two processes with exactly those variables; without a GPU they train on the CPU and
talk over gloo. (``accelerate launch --cpu --num_processes 2`` starts a single process unless
MPI is set up; ``torchrun --nproc_per_node 2 -m pipeline ...`` cannot pass ``--run``, which
torchrun's own option parser claims as an abbreviation of its ``--run-path``.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from data import load_codes, load_split, load_config

from tests.helpers import ROOT, TINY_PRIOR, make_run


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in ``processes`` processes with the variables torchrun sets; rank 0's output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    children = []
    for rank in range(processes):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes),
               "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        children.append(subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [child.communicate(timeout=900) for child in children]
    codes = [child.returncode for child in children]
    stdout = "".join(out for out, _ in outputs)
    stderr = "".join(err for _, err in outputs)
    return subprocess.CompletedProcess(args, max(codes, key=abs), stdout, stderr)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    result = launch("pipeline", "run", "--config", "tiny", "--run", str(run), "--set", "run.device=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_two_processes_finish_the_whole_job_with_one_set_of_outputs(two_process_run):
    run, result = two_process_run
    for name in ("stage1/checkpoint.pt", "codes/train.h5", "codes/val.h5", "stage2/checkpoint.pt",
                 "report/metrics.json", "report/index.html", "samples/learned.png"):
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # no torn or leftover temporary files
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert summary["processes"] == 2


def test_only_the_main_process_prints_progress(two_process_run):
    _, result = two_process_run
    for line in ("[stage 1: VQ-VAE]", "[encode]", "[stage 2: prior]", "[samples]", "[sample quality]"):
        assert result.stdout.count(line) == 1, (line, result.stdout)  # both processes' output together
    assert result.stderr.count("stage 1:   0%") == 1  # one progress bar, not one per process


def test_the_sharded_encode_writes_every_image_once_in_order(two_process_run):
    run, _ = two_process_run
    config = load_config(run / "config.yaml")
    from stage1_vqvae import VQVAE

    model = VQVAE.from_checkpoint(run / "stage1" / "checkpoint.pt")
    for split in ("train", "val"):
        codes, labels, info = load_codes(run / "codes" / f"{split}.h5", split=split)
        data = load_split(config.data, split)
        assert codes.shape[0] == len(data) and labels.tolist() == data.labels.tolist()
    head = load_split(config.data, "val").images[:50]
    from data import to_model_range

    assert (model.encode(to_model_range(head)) == load_codes(run / "codes" / "val.h5")[0][:50]).float().mean() > 0.99


def test_two_processes_train_the_transformer_prior(tmp_path):
    run = make_run(tmp_path / "run")
    settings = [*TINY_PRIOR, "stage2.architecture=transformer", "stage2.heads=2"]
    result = launch("stage2_prior", "train", "--run", str(run), *[a for s in settings for a in ("--set", s)])
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)
    assert state["architecture"] == "transformer" and state["step"] == 12
    assert json.loads((run / "stage2" / "summary.json").read_text())["processes"] == 2
