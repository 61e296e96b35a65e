"""bf16 and torch.compile on the CPU: the code paths a GPU run takes, exercised without a GPU.

The two compile tests take about 40 s together on 2 quiet CPU cores (graph compilation
dominates; several minutes when the cores are busy). ``VQPRIOR_SKIP_COMPILE=1`` skips them.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from data import load_config
from data.io import read_jsonl

from tests.helpers import TINY, TINY_PRIOR, make_run

compiles = pytest.mark.skipif(os.environ.get("VQPRIOR_SKIP_COMPILE") == "1", reason="VQPRIOR_SKIP_COMPILE=1")


def stage1(tmp_path, name, *overrides):
    from stage1_vqvae.train import train

    return train(load_config(TINY, ["stage1.steps=10", *overrides]), tmp_path / name)


def stage2(tmp_path, name, *overrides):
    from stage2_prior.train import train

    run = make_run(tmp_path / name)
    return train(load_config(run / "config.yaml", [*TINY_PRIOR, "stage2.steps=30", *overrides]), run), run


def test_bf16_asked_for_runs_stage1_on_the_cpu_close_to_fp32(tmp_path):
    full = stage1(tmp_path, "fp32")
    half = stage1(tmp_path, "bf16", "stage1.mixed_precision=bf16")
    assert full["mixed_precision"] == "no" and half["mixed_precision"] == "bf16"
    rows = read_jsonl(tmp_path / "bf16" / "stage1" / "metrics.jsonl")
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert half["val_recon_nmse"] == pytest.approx(full["val_recon_nmse"], rel=0.1)


def test_auto_precision_stays_fp32_on_the_cpu(tmp_path):
    assert stage1(tmp_path, "auto")["mixed_precision"] == "no"


def test_bf16_asked_for_runs_stage2_on_the_cpu_close_to_fp32(tmp_path):
    (full, _), (half, run) = stage2(tmp_path, "fp32"), stage2(tmp_path, "bf16", "stage2.mixed_precision=bf16")
    assert full["mixed_precision"] == "no" and half["mixed_precision"] == "bf16"
    assert all(math.isfinite(r["train_bits_per_code"]) for r in read_jsonl(run / "stage2" / "metrics.jsonl"))
    assert half["final_val_bits_per_code"] == pytest.approx(full["final_val_bits_per_code"], rel=0.05)
    assert json.loads((run / "stage2" / "summary.json").read_text())["mixed_precision"] == "bf16"


def test_fp16_on_the_cpu_is_a_user_error(tmp_path):
    from data.errors import UserError

    with pytest.raises(UserError, match="fp16 needs a GPU"):
        stage1(tmp_path, "fp16", "stage1.mixed_precision=fp16")


@compiles
def test_compiled_stage1_trains_like_the_eager_one(tmp_path):
    eager = stage1(tmp_path, "eager")
    compiled = stage1(tmp_path, "compiled", "stage1.compile=true")
    assert compiled["val_recon_nmse"] == pytest.approx(eager["val_recon_nmse"], rel=0.05)


@compiles
def test_compiled_stage2_trains_like_the_eager_one(tmp_path):
    (eager, _), (compiled, _) = stage2(tmp_path, "eager"), stage2(tmp_path, "compiled", "stage2.compile=true")
    assert compiled["final_val_bits_per_code"] == pytest.approx(eager["final_val_bits_per_code"], rel=0.02)
