"""Stage 1 end to end: the CLI on the tiny config, its artifacts, resume equivalence, user errors."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import TINY, run_cli
from data import UserError, load_config
from data.io import read_jsonl
from stage1_vqvae import VQVAE, VQVAEConfig
from stage1_vqvae import train as train_module


def test_train_writes_every_artifact(tiny_run_template):
    run = tiny_run_template
    assert load_config(run / "config.yaml").stage1.steps == 20
    state = torch.load(run / "stage1" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 20 and {"model", "optimizer", "rng", "model_config", "data_variance"} <= set(state)
    assert "quantizer.ema_cluster_size" in state["model"]  # EMA state is checkpointed
    rows = read_jsonl(run / "stage1" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for row in rows:
        assert {"step", "loss", "recon_nmse", "perplexity", "codes_used"} <= set(row)
    assert "val_recon_nmse" in rows[-1]
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert 0 < summary["val_recon_nmse"] < 2 and 1 <= summary["codes_used"] <= 32
    assert sum(summary["code_counts"]) == 1000 * 7 * 7
    with Image.open(run / "stage1" / "reconstructions.png") as img:  # 4 rows of 16 images, upscaled 2x
        assert img.size == (2 * (16 * 30 + 2), 2 * (4 * 30 + 2))
    assert not list(run.rglob("*.tmp"))


def test_from_checkpoint_encodes_and_decodes(tiny_run_template):
    model = VQVAE.from_checkpoint(tiny_run_template / "stage1" / "checkpoint.pt")
    assert not model.training
    assert model.encoder.net[2].weight.is_contiguous(memory_format=torch.channels_last)  # for_inference
    x = torch.rand(4, 1, 28, 28) - 0.5
    codes = model.encode(x)
    assert codes.shape == (4, 7, 7) and codes.dtype == torch.int64 and int(codes.max()) < 32
    images = model.decode(codes)
    assert images.shape == (4, 1, 28, 28) and images.min() >= -0.5 and images.max() <= 0.5


def test_for_inference_lays_the_encoder_out_channels_last_and_keeps_its_codes():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=16, residual_hidden=8, num_embeddings=32, embedding_dim=8)).eval()
    x = torch.rand(8, 1, 28, 28) - 0.5
    with torch.no_grad():
        z, codes = model.encoder(x), model.encode(x)
    assert model.for_inference() is model and not model.training
    assert model.encoder.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x), z)
    assert torch.equal(model.encode(x), codes)


def receptive_field(model: VQVAE) -> int:
    """Side in pixels of the input region that the encoder output at the grid centre depends on."""
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    model.encoder(x)[0, :, 8, 8].sum().backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("blocks, side", [(0, 18), (1, 26), (2, 34)])
def test_each_encoder_residual_block_widens_a_code_by_8_pixels(blocks, side):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(hidden=16, residual_hidden=8, residual_layers=2, encoder_residual_layers=blocks))
    assert receptive_field(model) == side
    assert len(model.decoder.net[1].blocks) == 2  # the decoder keeps residual_layers


def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    config = load_config(TINY)
    full = train_module.train(config, tmp_path / "full")

    real_log = train_module.MetricsLog.log

    def crash_at_step_15(self, row):
        if row["step"] == 15:  # after the step-10 checkpoint, before the step-20 one
            raise RuntimeError("simulated crash")
        real_log(self, row)

    monkeypatch.setattr(train_module.MetricsLog, "log", crash_at_step_15)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_module.train(config, tmp_path / "crashed")
    assert torch.load(tmp_path / "crashed" / "stage1" / "checkpoint.pt", weights_only=True)["step"] == 10
    monkeypatch.setattr(train_module.MetricsLog, "log", real_log)
    resumed = train_module.train(config, tmp_path / "crashed", resume=True)

    a = torch.load(tmp_path / "full" / "stage1" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "crashed" / "stage1" / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert resumed["val_recon_nmse"] == full["val_recon_nmse"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "full" / "stage1" / "metrics.jsonl")) == \
        strip(read_jsonl(tmp_path / "crashed" / "stage1" / "metrics.jsonl"))


def test_help_works():
    result = run_cli("stage1_vqvae", "train", "--help")
    assert result.returncode == 0 and "--resume" in result.stdout


def _assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_existing_run_is_refused_without_resume(tiny_run, cli):
    before = (tiny_run / "stage1" / "checkpoint.pt").read_bytes()
    result = cli("stage1_vqvae", "train", "--config", str(TINY), "--run", str(tiny_run))
    _assert_user_error(result, "already holds output", "--resume")
    assert (tiny_run / "stage1" / "checkpoint.pt").read_bytes() == before


def test_resume_of_a_finished_run_changes_no_weights(tiny_run, cli):
    before = torch.load(tiny_run / "stage1" / "checkpoint.pt", weights_only=True)["model"]
    result = cli("stage1_vqvae", "train", "--run", str(tiny_run), "--resume")
    assert result.returncode == 0, result.stderr
    after = torch.load(tiny_run / "stage1" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("args, fragments", [
    (["--config", "missing.yaml"], ["config file not found: missing.yaml"]),
    (["--config", str(TINY), "--set", "stage1.num_embedings=8"], ["did you mean 'stage1.num_embeddings'"]),
    (["--config", str(TINY), "--set", "data.image_size=30"], ["not divisible", "data.image_size"]),
    (["--config", str(TINY), "--set", "stage1.batch_size=20000"], ["fewer than one batch"]),
    (["--config", str(TINY), "--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, cli, args, fragments):
    result = cli("stage1_vqvae", "train", "--run", str(tmp_path / "run"), *args)
    _assert_user_error(result, *fragments)


def test_resume_with_other_model_settings_is_a_user_error(tiny_run, cli):
    saved = (tiny_run / "config.yaml").read_bytes()
    result = cli("stage1_vqvae", "train", "--run", str(tiny_run), "--resume", "--set", "stage1.hidden=32")
    _assert_user_error(result, "cannot change stage1.hidden (16 -> 32)")
    assert (tiny_run / "config.yaml").read_bytes() == saved  # refused before anything was written


def test_train_on_a_checkpoint_of_other_settings_is_a_user_error(tiny_run):
    """The training function itself (the Python API) checks the checkpoint against the config."""
    config = load_config(tiny_run / "config.yaml", ["stage1.hidden=32", "stage1.steps=30"])
    with pytest.raises(UserError, match="other stage1 settings"):
        train_module.train(config, tiny_run, resume=True)


def test_corrupt_checkpoint_is_a_user_error(tiny_run, cli):
    (tiny_run / "stage1" / "checkpoint.pt").write_bytes(b"garbage")
    result = cli("stage1_vqvae", "train", "--run", str(tiny_run), "--resume")
    _assert_user_error(result, "corrupt")
