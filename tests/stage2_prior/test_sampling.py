"""Sampling: cached equals naive, reproducibility, temperature/top-k/labels, argument checks."""

import math

import pytest
import torch

from stage2_prior import GatedPixelCNN, MarginalPrior, PixelCNNConfig, UniformPrior, sample
from stage2_prior.sampling import inverse_cdf

K = 16


def model(dtype=torch.float64, **kwargs) -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(K, PixelCNNConfig(hidden=16, layers=4, kernel_size=5), **kwargs).to(dtype)


def draw(prior, method, seed=0, n=6, grid=(5, 7), **kwargs) -> torch.Tensor:
    return sample(prior, n, grid, generator=torch.Generator().manual_seed(seed), method=method, **kwargs)


@pytest.mark.parametrize("options", [{}, {"temperature": 0.7, "top_k": 5}, {"temperature": 1.5}])
def test_cached_sampling_returns_the_codes_of_naive_sampling(options):
    prior = model()
    cached = draw(prior, "cached", **options)
    assert cached.dtype == torch.int64 and cached.shape == (6, 5, 7)
    assert torch.equal(cached, draw(prior, "naive", **options))


def test_cached_equals_naive_for_a_conditional_float32_model():
    prior = model(torch.float32, num_classes=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(draw(prior, "cached", labels=labels), draw(prior, "naive", labels=labels))


def test_same_generator_state_gives_the_same_codes():
    prior = model()
    assert torch.equal(draw(prior, "cached", seed=3), draw(prior, "cached", seed=3))
    assert not torch.equal(draw(prior, "cached", seed=3), draw(prior, "cached", seed=4))


def test_samples_respond_to_the_label():
    prior = model(num_classes=3)
    assert not torch.equal(draw(prior, "cached", labels=0), draw(prior, "cached", labels=1))


def test_top_k_of_one_picks_the_most_likely_code_everywhere():
    prior = model().eval()  # as sampling runs it: dropout off
    codes = draw(prior, "cached", top_k=1)
    with torch.no_grad():
        assert torch.equal(prior(codes).argmax(dim=1), codes)


def test_sampling_leaves_the_model_in_its_former_mode():
    prior = model().train()
    draw(prior, "cached")
    assert prior.training


def test_inverse_cdf_draws_each_code_with_its_probability():
    probs = torch.tensor([0.5, 0.0, 0.25, 0.125, 0.125])
    u = torch.tensor([0.0, 0.49, 0.51, 0.74, 0.76, 0.87, 0.88, 0.999], dtype=torch.float64)
    codes = inverse_cdf(probs.log().expand(len(u), -1), u)
    assert codes.tolist() == [0, 0, 2, 2, 3, 3, 4, 4]


def test_inverse_cdf_top_k_renormalises_over_the_k_most_likely_codes():
    probs = torch.tensor([0.5, 0.0, 0.25, 0.125, 0.125])
    u = torch.tensor([0.0, 0.66, 0.67, 0.999], dtype=torch.float64)  # q = (2/3, 0, 1/3, 0, 0)
    assert inverse_cdf(probs.log().expand(len(u), -1), u, top_k=2).tolist() == [0, 0, 2, 2]


def test_marginal_prior_samples_follow_its_frequencies():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    prior = MarginalPrior(probs.log())
    codes = sample(prior, 500, (4, 4), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(codes.flatten(), minlength=4) / codes.numel()
    assert torch.allclose(freq, probs, atol=0.02)


@pytest.mark.parametrize("prior", [UniformPrior(K), MarginalPrior(torch.linspace(-3, 0, K))])
def test_independent_priors_give_the_same_codes_with_either_method(prior):
    assert torch.equal(draw(prior, "cached"), draw(prior, "naive"))


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be"),
    ({"temperature": 0.0}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": K + 1}, "top_k"),
    ({"method": "fast"}, "method"),
    ({"grid": (0, 3)}, "grid"),
    ({"labels": 3}, "labels must lie"),
    ({"labels": None}, "class-conditional"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    args = {"n": 2, "grid": (3, 3), "labels": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(model(num_classes=3), args.pop("n"), args.pop("grid"), **args)


def test_uniform_prior_logits_are_log_one_over_k():
    logits = UniformPrior(K)(torch.zeros(1, 2, 2, dtype=torch.int64))
    assert torch.allclose(logits, torch.full((1, K, 2, 2), -math.log(K)))


def test_a_bad_sampling_value_is_a_user_error_and_a_value_error_that_names_the_argument():
    from data.cli import render
    from data.errors import UserError
    from stage2_prior.sampling import check_sampling

    with pytest.raises(ValueError) as err:
        check_sampling(4, top_k=9, num_embeddings=8)
    assert isinstance(err.value, UserError) and str(err.value) == "top_k must lie in [1, 8], got 9"
    assert render(err.value) == "--top-k must lie in [1, 8], got 9"
    check_sampling(4, top_k=9)  # K unknown: top_k is checked where it is
