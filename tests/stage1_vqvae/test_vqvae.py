"""Stage 1 end to end: the CLI on the tiny config, its artifacts, resume equivalence, user errors."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from data import UserError, load_config
from data.io import read_jsonl
from stage1_vqvae import VQVAE, VQVAEConfig
from stage1_vqvae import train as train_module

from tests.helpers import TINY, rewrite_checkpoint, run_cli


def test_train_writes_every_artifact(tiny_run_template):
    run = tiny_run_template
    assert (load_config(run / "config.yaml").stage1.steps, load_config(run / "config.yaml").stage1.decoder_steps) \
        == (20, 4)
    state = torch.load(run / "stage1" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 24 and {"model", "optimizer", "rng", "model_config", "data_variance"} <= set(state)
    assert "quantizer.ema_cluster_size" in state["model"]  # EMA state is checkpointed
    rows = read_jsonl(run / "stage1" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 24]  # 20 joint steps, then 4 of the decoder alone
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


@pytest.mark.parametrize("schedule, steps, decoder_steps", [("constant", 20, 0), ("cosine", 20, 0),
                                                            ("constant", 10, 10)])  # crashes in the decoder phase
def test_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, schedule, steps, decoder_steps):
    config = load_config(TINY, [f"stage1.lr_schedule={schedule}", f"stage1.steps={steps}",
                                f"stage1.decoder_steps={decoder_steps}"])
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
    timing = ("images_per_s", "train_time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "full" / "stage1" / "metrics.jsonl")) == \
        strip(read_jsonl(tmp_path / "crashed" / "stage1" / "metrics.jsonl"))
    rates = [row["lr"] for row in read_jsonl(tmp_path / "full" / "stage1" / "metrics.jsonl") if "lr" in row]
    if schedule == "constant":
        assert set(rates) == {config.stage1.lr}
    else:  # cosine: falls at every logged step, towards 0 at the end
        assert rates == sorted(set(rates), reverse=True) and rates[-1] < 0.05 * config.stage1.lr


def test_an_interrupted_stage1_resumes_under_other_decoder_steps(tmp_path, monkeypatch):
    config = load_config(TINY, ["stage1.steps=10", "stage1.decoder_steps=10"])
    full = train_module.train(config, tmp_path / "full")
    real_log = train_module.MetricsLog.log

    def crash_at_step_10(self, row):  # after the step-5 checkpoint, before the step-10 one
        if row["step"] == 10:
            raise RuntimeError("simulated crash")
        real_log(self, row)

    monkeypatch.setattr(train_module.MetricsLog, "log", crash_at_step_10)
    earlier = load_config(TINY, ["stage1.steps=10", "stage1.decoder_steps=0", "stage1.checkpoint_every=5"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_module.train(earlier, tmp_path / "crashed")
    state = torch.load(tmp_path / "crashed" / "stage1" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5 and len(state["optimizer"]["param_groups"]) == 2  # the layout is the same
    monkeypatch.setattr(train_module.MetricsLog, "log", real_log)
    resumed = train_module.train(config, tmp_path / "crashed", resume=True)  # and decoder_steps 0 -> 10
    a = torch.load(tmp_path / "full" / "stage1" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "crashed" / "stage1" / "checkpoint.pt", weights_only=True)["model"]
    assert resumed["decoder_steps"] == full["decoder_steps"] == 10 and all(torch.equal(a[k], b[k]) for k in a)


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


# ---------------------------------------------------------------- the decoder's likelihood (bits per dimension)


def test_the_gaussian_pixel_scale_is_fitted_into_the_checkpoint_and_the_val_codes_carry_the_distortion(
        tiny_run_template):
    from data import load_split, to_model_range
    from data.codes import load_distortion

    run = tiny_run_template
    state = torch.load(run / "stage1" / "checkpoint.pt", weights_only=True)
    assert torch.isfinite(state["model"]["pixel_log_scale"]).all() and state["model_config"]["likelihood"] == "gaussian"
    model = VQVAE.from_checkpoint(run / "stage1" / "checkpoint.pt")
    assert model.can_measure_distortion
    distortion = load_distortion(run / "codes" / "val.h5")
    assert distortion.dims == 28 * 28 and distortion.likelihood == "gaussian" and len(distortion.bits) == 1000
    assert load_distortion(run / "codes" / "train.h5") is None  # only the split bits per dimension is reported on
    val = to_model_range(load_split(load_config(run / "config.yaml").data, "val").images[:50])
    torch.testing.assert_close(model.distortion_bits(val), distortion.bits[:50], rtol=1e-5, atol=1e-3)
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert summary["val_distortion_bits_per_dim"] == pytest.approx(distortion.bits.mean().item() / 784, rel=1e-5)
    assert summary["pixel_scale"] == pytest.approx(state["model"]["pixel_log_scale"].exp().tolist())


def test_an_unfitted_gaussian_model_cannot_measure_distortion_but_still_decodes():
    model = VQVAE(VQVAEConfig(num_embeddings=8, embedding_dim=4, hidden=8, residual_hidden=4), 1)
    assert not model.can_measure_distortion and torch.isnan(model.pixel_log_scale).all()
    with pytest.raises(ValueError, match="fit_pixel_scale"):
        model.distortion_bits(torch.zeros(1, 1, 28, 28))
    assert model.decode(torch.zeros(1, 7, 7, dtype=torch.long)).shape == (1, 1, 28, 28)


def test_a_checkpoint_without_the_pixel_scale_is_refused_in_one_line(tiny_run_template):
    state = torch.load(tiny_run_template / "stage1" / "checkpoint.pt", weights_only=True)
    del state["model"]["pixel_log_scale"]
    with pytest.raises(UserError, match="do not fit the model.*pixel_log_scale"):
        VQVAE.from_state(state)


def test_resuming_from_an_optimizer_state_of_another_layout_is_refused(tmp_path):
    config = load_config(TINY, ["stage1.steps=4", "stage1.decoder_steps=0"])
    train_module.train(config, tmp_path)
    path = tmp_path / "stage1" / "checkpoint.pt"
    rewrite_checkpoint(path, lambda state: state["optimizer"].update(param_groups=state["optimizer"]["param_groups"][:1]))
    with pytest.raises(UserError, match="optimizer state that does not fit"):
        train_module.train(load_config(TINY, ["stage1.steps=8", "stage1.decoder_steps=0"]), tmp_path, resume=True)


def test_logistic_training_lowers_its_discretised_nll(tmp_path):
    from data import load_split
    from data.datasets import data_variance
    from data.training import seed_everything

    config = load_config(TINY, ["stage1.likelihood=logistic", "stage1.steps=60", "stage1.decoder_steps=0",
                                "stage1.lr=0.003"])
    seed_everything(config.run.seed)
    untrained = train_module.build_model(config, 1)
    assert untrained.decoder.net[-1].out_channels == 2  # a mean and a log-scale per sub-pixel
    val = load_split(config.data, "val").images
    before = train_module.evaluate(untrained, val, data_variance(load_split(config.data, "train").images), "cpu")
    summary = train_module.train(config, tmp_path / "run")
    assert summary["likelihood"] == "logistic" and summary["pixel_scale"] is None
    assert summary["val_distortion_bits_per_dim"] < before["distortion_bits_per_dim"] - 0.5
    rows = read_jsonl(tmp_path / "run" / "stage1" / "metrics.jsonl")
    val = [r["val_distortion_bits_per_dim"] for r in rows if "val_distortion_bits_per_dim" in r]
    assert len(val) == 6 and val[-1] < val[0] - 0.3  # evaluated every 10 steps, on the whole val split
    assert rows[-1]["recon_loss"] < rows[0]["recon_loss"] and 0 < summary["val_recon_nmse"] < 2
    model = VQVAE.from_checkpoint(tmp_path / "run" / "stage1" / "checkpoint.pt")
    assert "pixel_log_scale" not in model.state_dict() and model.can_measure_distortion
    images = model.decode(model.encode(torch.rand(2, 1, 28, 28) - 0.5))
    assert images.shape == (2, 1, 28, 28) and images.min() >= -0.5 and images.max() <= 0.5  # the clamped means


def test_decoder_steps_train_the_decoder_alone_and_every_code_stays_the_same(tmp_path, monkeypatch):
    config = load_config(TINY, ["stage1.steps=10", "stage1.decoder_steps=6", "stage1.checkpoint_every=5",
                                "stage1.dead_code_steps=1"])  # re-seeding would move codes at once
    saved, real_save = {}, train_module.save_checkpoint

    def save(path, kind, **state):  # keep a copy: the state dict's tensors are the live weights
        saved[state["step"]] = {k: v.clone() for k, v in state["model"].items()}
        real_save(path, kind, **state)

    monkeypatch.setattr(train_module, "save_checkpoint", save)
    summary = train_module.train(config, tmp_path / "run")
    assert sorted(saved) == [5, 10, 15, 16] and summary["decoder_steps"] == 6
    joint, after = saved[10], saved[16]
    changed = {k for k in joint if not torch.equal(joint[k], after[k])}
    assert changed and all(k.startswith("decoder.") or k == "pixel_log_scale" for k in changed)
    assert any(not torch.equal(saved[5][k], joint[k]) for k in joint if k.startswith("encoder."))
    rates = [row["lr"] for row in read_jsonl(tmp_path / "run" / "stage1" / "metrics.jsonl")]
    assert len(rates) == 4 and rates[-1] == config.stage1.lr  # logged: the decoder's rate
