"""Stage-2 training and evaluation end to end on synthetic code files: outputs, resume, errors."""

import json
import math

import pytest
import torch

import stage2_prior.train as train_module
from data.codes import load_codes
from data.io import read_jsonl
from stage2_prior import MarginalPrior, UniformPrior, bits_per_code, load_learned_prior
from stage2_prior.learned import CHECKPOINT_KEYS

from tests.helpers import SHA, TINY_PRIOR, make_run, stripes, write_codes


def train_args(run, *extra):
    return ["train", "--run", str(run), *[a for s in TINY_PRIOR for a in ("--set", s)], *extra]


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def test_training_writes_a_safe_checkpoint_metrics_and_summary(cli, run):
    result = cli("stage2_prior", *train_args(run))
    assert result.returncode == 0, result.stderr
    state = torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)
    assert set(CHECKPOINT_KEYS) <= set(state)
    assert (state["step"], state["num_embeddings"], state["grid"], state["num_classes"]) == (12, 16, [6, 6], 0)
    assert state["stage1_checkpoint_sha256"] == SHA
    rows = read_jsonl(run / "stage2" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 6, 8, 12]
    assert all({"train_bits_per_code", "lr"} <= set(r) for r in rows)
    assert [r["step"] for r in rows if "val_bits_per_code" in r] == [6, 12]
    summary = json.loads((run / "stage2" / "summary.json").read_text())
    assert summary["final_val_bits_per_code"] == rows[-1]["val_bits_per_code"] and summary["grids_per_s"] > 0
    assert "hidden: 16" in (run / "config.yaml").read_text()  # the resolved config is saved


def test_checkpoint_rebuilds_the_learned_and_marginal_priors(cli, run):
    assert cli("stage2_prior", *train_args(run)).returncode == 0
    path = run / "stage2" / "checkpoint.pt"
    prior = load_learned_prior(path)
    assert not prior.training and prior.num_embeddings == 16
    codes, _, _ = load_codes(run / "codes" / "train.h5")
    expected = torch.bincount(codes.flatten(), minlength=16).double().add(1.0)  # add-one smoothing
    assert torch.allclose(MarginalPrior.from_checkpoint(path).log_probs.exp().double(),
                          expected / expected.sum(), atol=1e-6)


def kill_at_step_8_and_resume(cli, run, monkeypatch, *extra):
    """Train ``run``, interrupted just after the checkpoint of step 8, then resume it to the end."""
    save = train_module.save_checkpoint

    def save_then_die(path, kind, **state):
        save(path, kind, **state)
        if state["step"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    assert cli("stage2_prior", *train_args(run, *extra)).returncode == 130
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    assert cli("stage2_prior", *train_args(run, *extra, "--resume")).returncode == 0


def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(cli, run, tmp_path, monkeypatch):
    other = make_run(tmp_path / "other")
    assert cli("stage2_prior", *train_args(other)).returncode == 0

    kill_at_step_8_and_resume(cli, run, monkeypatch)

    resumed = torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)
    uninterrupted = torch.load(other / "stage2" / "checkpoint.pt", weights_only=True)
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run / "stage2" / "metrics.jsonl")) == strip(read_jsonl(other / "stage2" / "metrics.jsonl"))
    assert (run / "stage2" / "checkpoint.pt").read_bytes() == (other / "stage2" / "checkpoint.pt").read_bytes()


def test_existing_output_is_not_overwritten_without_resume(cli, run):
    assert cli("stage2_prior", *train_args(run)).returncode == 0
    result = cli("stage2_prior", *train_args(run))
    assert result.returncode == 2 and "--resume" in result.stderr


def test_evaluate_reports_bits_per_code_of_the_three_priors(cli, run):
    assert cli("stage2_prior", *train_args(run, "--set", "stage2.steps=100", "--set", "stage2.lr=0.01")).returncode == 0
    result = cli("stage2_prior", "evaluate", "--run", str(run))
    assert result.returncode == 0, result.stderr
    bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    assert set(bits) == {"learned", "learned_train", "marginal", "uniform", "num_embeddings", "computed_from"}
    assert bits["uniform"] == pytest.approx(4.0) and bits["num_embeddings"] == 16
    assert bits["learned"] < 0.5 * bits["marginal"]  # the stripes are predictable from their context
    assert "learned" in result.stdout and "marginal" in result.stdout


def test_conditional_prior_trains_on_labelled_codes(cli, run):
    assert cli("stage2_prior", *train_args(run, "--set", "stage2.conditional=true")).returncode == 0
    assert torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)["num_classes"] == 3


def test_bits_per_code_on_a_hand_computed_case():
    """Train codes 0,0,0,0 with K=4 and add-one smoothing: p = (5/8, 1/8, 1/8, 1/8)."""
    marginal = MarginalPrior.fit(torch.zeros(1, 2, 2, dtype=torch.int64), num_embeddings=4, smoothing=1.0)
    val = torch.tensor([[[0, 1], [0, 0]]])
    assert bits_per_code(marginal, val) == pytest.approx((3 * math.log2(8 / 5) + 3) / 4)
    assert bits_per_code(UniformPrior(4), val) == pytest.approx(2.0)


# ----------------------------------------------------------------- bad input: one line, exit 2


def one_line_error(result, *words):
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_conditional_prior_needs_labelled_codes(cli, tmp_path):
    run = make_run(tmp_path / "run", labelled=False)
    one_line_error(cli("stage2_prior", *train_args(run, "--set", "stage2.conditional=true")), "no labels")
    assert not (run / "stage2").exists()


def test_missing_code_files_are_reported(cli, tmp_path):
    one_line_error(cli("stage2_prior", *train_args(tmp_path / "nowhere")), "not a run directory",
                   "train stage 1: `python -m stage1_vqvae train --config FILE --run")
    assert not (tmp_path / "nowhere").exists()
    run = make_run(tmp_path / "run")
    (run / "codes" / "train.h5").unlink()
    one_line_error(cli("stage2_prior", *train_args(run)), "train.h5", "encode")
    assert sorted(p.name for p in run.iterdir()) == [".lock", "codes", "config.yaml"]  # nothing else written


def test_val_codes_from_another_stage1_checkpoint_are_refused(cli, run):
    codes, _ = stripes(8)
    write_codes(run / "codes" / "val.h5", codes, sha="cd" * 32, split="val")
    one_line_error(cli("stage2_prior", *train_args(run)), "different stage-1 checkpoint")


@pytest.mark.parametrize("k, grid", [(32, (6, 6)), (16, (5, 6))], ids=["K", "grid"])
def test_evaluate_refuses_code_files_that_do_not_match_the_model(cli, run, k, grid):
    assert cli("stage2_prior", *train_args(run)).returncode == 0
    codes, _ = stripes(8, grid, k)
    write_codes(run / "codes" / "val.h5", codes, num_embeddings=k, split="val")
    one_line_error(cli("stage2_prior", "evaluate", "--run", str(run)), "K=" if k != 16 else "grids")


@pytest.mark.parametrize("k, grid", [(32, (6, 6)), (16, (5, 6))], ids=["K", "grid"])
def test_resume_refuses_code_files_that_do_not_match_the_checkpoint(cli, run, k, grid):
    assert cli("stage2_prior", *train_args(run)).returncode == 0
    for split in ("train", "val"):
        codes, _ = stripes(64, grid, k)
        write_codes(run / "codes" / f"{split}.h5", codes, num_embeddings=k, split=split)
    one_line_error(cli("stage2_prior", *train_args(run, "--resume")), "checkpoint")


def test_resume_without_a_checkpoint_starts_from_step_zero(cli, run):
    result = cli("stage2_prior", *train_args(run, "--resume"))
    assert result.returncode == 0 and "step 0" in result.stdout
    assert torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)["step"] == 12


def test_corrupt_checkpoint_is_reported(cli, run):
    (run / "stage2").mkdir()
    (run / "stage2" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    one_line_error(cli("stage2_prior", "evaluate", "--run", str(run)), "corrupt")


def test_bad_kernel_size_is_a_config_error(cli, run):
    one_line_error(cli("stage2_prior", *train_args(run, "--set", "stage2.kernel_size=4")), "kernel_size")


def test_the_moving_average_of_the_weights_is_what_is_evaluated_saved_and_sampled(cli, run):
    assert cli("stage2_prior", *train_args(run, "--set", "stage2.ema_decay=0.9")).returncode == 0
    state = torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)
    assert set(state["ema"]) == set(state["model"])
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    prior = load_learned_prior(run / "stage2" / "checkpoint.pt")
    for name, tensor in prior.state_dict().items():
        assert torch.equal(tensor, state["ema"][name]), name  # the average, not the last weights
    codes, _, _ = load_codes(run / "codes" / "val.h5")
    summary = json.loads((run / "stage2" / "summary.json").read_text())
    assert summary["final_val_bits_per_code"] == pytest.approx(bits_per_code(prior, codes), rel=1e-9)


def test_the_moving_average_starts_at_the_weights_and_follows_its_formula():
    from stage2_prior.train import WeightEMA

    model = torch.nn.Linear(2, 1)
    ema = WeightEMA(model, decay=0.5)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), model.parameters()))
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=0)  # d = min(0.5, 1/10) = 0.1: mostly the new weights
    for b, a, p in zip(before, ema.model.parameters(), model.parameters()):
        torch.testing.assert_close(a, 0.1 * b + 0.9 * p)


def test_min_epochs_lengthens_training_on_more_grids(cli, run):
    """256 grids, batch 16: two passes take 32 steps, more than stage2.steps=12; the summary says so."""
    assert cli("stage2_prior", *train_args(run, "--set", "stage2.min_epochs=2")).returncode == 0
    assert json.loads((run / "stage2" / "summary.json").read_text())["steps"] == 32
    assert torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)["step"] == 32
    from data.config import Stage2Config

    defaults = Stage2Config()
    assert defaults.total_steps(9000) == 3000  # the default data: steps decide
    assert defaults.total_steps(54000) == 10125  # a 60,000-image folder: 6 passes of 32 grids
    assert Stage2Config(steps=4000, min_epochs=3, batch_size=32).total_steps(60000) == 5625  # fashion_mnist.yaml


def test_context_noise_replaces_that_fraction_with_training_codes_the_same_way_every_time():
    pool = torch.tensor([[5, 6], [7, 8]])
    x = torch.zeros(400, 7, 7, dtype=torch.long)
    assert train_module.corrupt(x, 0.0, pool, seed=0, step=3, rank=0) is x
    noisy = train_module.corrupt(x, 0.25, pool, seed=0, step=3, rank=0)
    replaced = noisy != 0
    assert set(noisy[replaced].unique().tolist()) == {5, 6, 7, 8}  # drawn from the pool, every code of it
    assert abs(replaced.float().mean().item() - 0.25) < 0.02
    assert torch.equal(noisy, train_module.corrupt(x, 0.25, pool, seed=0, step=3, rank=0))  # resumable
    assert not torch.equal(noisy, train_module.corrupt(x, 0.25, pool, seed=0, step=4, rank=0))
    assert not torch.equal(noisy, train_module.corrupt(x, 0.25, pool, seed=0, step=3, rank=1))


def test_a_killed_run_with_context_noise_resumes_to_the_uninterrupted_weights(cli, run, tmp_path, monkeypatch):
    noise = ("--set", "stage2.context_noise=0.3")
    straight = make_run(tmp_path / "straight")
    assert cli("stage2_prior", *train_args(straight, *noise)).returncode == 0
    kill_at_step_8_and_resume(cli, run, monkeypatch, *noise)
    weights = [torch.load(r / "stage2" / "checkpoint.pt", weights_only=True)["model"] for r in (straight, run)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    plain = make_run(tmp_path / "plain")
    assert cli("stage2_prior", *train_args(plain)).returncode == 0
    other = torch.load(plain / "stage2" / "checkpoint.pt", weights_only=True)["model"]
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)  # the noise did change training
