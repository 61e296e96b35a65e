"""Bits per dimension: the discretised decoder likelihood (stage 1) and rate + distortion (stage 2)."""

import itertools
import json
import math

import pytest
import torch

from data.codes import CodeWriter, load_distortion
from stage1_vqvae.likelihood import HALF_BIN, discretized_log_prob, fit_log_scale, nll_bits

from tests.helpers import SHA, TINY_PRIOR, make_run, stripes

LEVELS = torch.arange(256, dtype=torch.float64) / 255 - 0.5  # every 8-bit value in the model range


def phi(z: float) -> float:
    """The standard normal CDF, accurate far into the lower tail."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def log_p(x, mean, scale, family):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return discretized_log_prob(t(x), t(mean), t(math.log(scale)), family).item()


# ---------------------------------------------------------------- the discretised likelihood


def test_a_hand_computed_image_costs_the_bits_of_its_bins():
    """A 2x2 image: levels 0, 128, 200, 255 under a Gaussian at 0 with scale 0.1 (edge bins open)."""
    levels, mean, s = [0, 128, 200, 255], 0.0, 0.1
    x = [k / 255 - 0.5 for k in levels]
    probs = [phi((x[0] + HALF_BIN - mean) / s),                                   # (-inf, x_0 + 1/510]
             phi((x[1] + HALF_BIN - mean) / s) - phi((x[1] - HALF_BIN - mean) / s),
             phi((x[2] + HALF_BIN - mean) / s) - phi((x[2] - HALF_BIN - mean) / s),
             phi(-(x[3] - HALF_BIN - mean) / s)]                                  # [x_255 - 1/510, inf)
    image = torch.tensor(x, dtype=torch.float64).view(1, 1, 2, 2)
    bits = nll_bits(image, torch.zeros_like(image), torch.full_like(image, math.log(s)), "gaussian")
    assert bits.shape == (1,)
    assert bits.item() == pytest.approx(-sum(math.log2(p) for p in probs), rel=1e-9)
    # the logistic family: sigmoid differences
    z = (x[1] - 0.1) / 0.05
    expected = sigmoid(z + HALF_BIN / 0.05) - sigmoid(z - HALF_BIN / 0.05)
    assert log_p(x[1], 0.1, 0.05, "logistic") == pytest.approx(math.log(expected), rel=1e-9)


@pytest.mark.parametrize("family", ["gaussian", "logistic"])
@pytest.mark.parametrize("mean, scale", [(0.0, 0.05), (0.3, 1e-3), (-0.7, 0.02), (0.49, 0.3), (0.1, 20.0)])
def test_the_256_levels_are_a_distribution_with_finite_log_probabilities(family, mean, scale):
    log_probs = discretized_log_prob(LEVELS, torch.tensor(mean, dtype=torch.float64),
                                     torch.tensor(math.log(scale), dtype=torch.float64), family)
    assert torch.isfinite(log_probs).all()  # even bins 50 scales away from the mean
    assert log_probs.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    assert (log_probs <= 0).all()


def test_far_tail_bins_stay_accurate_in_log_space():
    """A bin 30 scales above the mean: mass Phi(-29.5) - Phi(-30.5), about e^-440, where 1 - Phi rounds to 0."""
    s = 1 / 255  # the scale is one bin wide, so the bin spans z in [29.5, 30.5]
    x = 200 / 255 - 0.5
    value = log_p(x, x - 30 * s, s, "gaussian")
    assert value == pytest.approx(math.log(phi(-29.5) - phi(-30.5)), rel=1e-9)
    assert value < -400


def test_gradients_are_finite_for_edge_and_tiny_bins():
    mean = torch.tensor([-0.8, 0.0, 0.9, 0.2], requires_grad=True)
    log_scale = torch.tensor([-3.0, 4.0, -5.0, -7.0], requires_grad=True)  # a huge scale makes a tiny bin
    x = torch.tensor([-0.5, 0.0, 0.5, 0.3])
    discretized_log_prob(x, mean, log_scale, "logistic").sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


@pytest.mark.parametrize("scale", [0.004, 0.03, 0.15])
def test_the_gaussian_scale_fit_recovers_a_known_scale(scale):
    """Means anywhere in the range, pixels = quantised mean + N(0, scale^2), clipped to the edge levels."""
    gen = torch.Generator().manual_seed(0)
    mean = (torch.rand(300_000, generator=gen, dtype=torch.float64) - 0.5) * 0.9
    noisy = mean + scale * torch.randn(300_000, generator=gen, dtype=torch.float64)
    x = ((noisy + 0.5) * 255).round().clamp(0, 255) / 255 - 0.5
    fitted = math.exp(fit_log_scale(x, mean, "gaussian"))
    assert fitted == pytest.approx(scale, rel=0.01)
    rmse = (x - mean).square().mean().sqrt().item()
    if scale < 0.01:  # at a scale below two bins the RMSE is off by the rounding; the likelihood fit is not
        assert abs(rmse - scale) > 2 * abs(fitted - scale)


# ---------------------------------------------------------------- rate + distortion in stage 2


def write_codes_with_distortion(path, codes, labels, bits, dims=144, split="val"):
    with CodeWriter(path, num_embeddings=16, embedding_dim=8, grid=tuple(codes.shape[1:]), dataset="synthetic",
                    split=split, stage1_checkpoint_sha256=SHA, has_labels=True, distortion_dims=dims,
                    distortion_likelihood="gaussian") as writer:
        writer.append(codes, labels, bits)


@pytest.fixture
def bpd_run(tmp_path, cli):
    """A synthetic run whose val code file carries known distortion bits, with a trained and evaluated prior."""
    run = make_run(tmp_path / "run")
    val, val_labels = stripes(64, (6, 6), 16, seed=1)
    distortion = torch.linspace(100.0, 300.0, 64, dtype=torch.float64)
    write_codes_with_distortion(run / "codes" / "val.h5", val, val_labels, distortion)
    assert cli("stage2_prior", "train", "--run", str(run), *[a for s in TINY_PRIOR for a in ("--set", s)]).returncode == 0
    result = cli("stage2_prior", "evaluate", "--run", str(run))
    assert result.returncode == 0, result.stderr
    return run, distortion, result.stdout


def test_bits_per_dim_is_rate_plus_the_shared_distortion(bpd_run):
    run, distortion, stdout = bpd_run
    bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    bpd, dims, codes = bits["bits_per_dim"], 144, 36
    assert bits["dims_per_image"] == dims and bits["likelihood"] == "gaussian"
    assert bpd["distortion"] == pytest.approx(distortion.mean().item() / dims, rel=1e-12)
    assert bpd["uniform"] == pytest.approx((distortion.mean().item() + codes * 4.0) / dims, rel=1e-12)  # log2 16
    assert "bits/dim" in stdout and f"{bpd['learned']:.3f}" in stdout


def test_bits_per_dim_differences_are_bits_per_image_differences(bpd_run):
    """(bpd_a - bpd_b) * C*H*W = bits per image of a - bits per image of b, for any two priors."""
    run, _, _ = bpd_run
    bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    for a, b in itertools.permutations(("learned", "marginal", "uniform"), 2):
        per_image = (bits[a] - bits[b]) * 36
        assert (bits["bits_per_dim"][a] - bits["bits_per_dim"][b]) * bits["dims_per_image"] == \
            pytest.approx(per_image, abs=1e-6)


def test_code_files_without_distortion_give_no_bits_per_dim(tmp_path, cli):
    run = make_run(tmp_path / "run")
    assert load_distortion(run / "codes" / "val.h5") is None
    assert cli("stage2_prior", "train", "--run", str(run), *[a for s in TINY_PRIOR for a in ("--set", s)]).returncode == 0
    assert cli("stage2_prior", "evaluate", "--run", str(run)).returncode == 0
    assert "bits_per_dim" not in json.loads((run / "stage2" / "bits_per_code.json").read_text())
