"""Nucleus (top-p) sampling: cached equals naive, its limits, the nucleus itself, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from data.config_files import load_config, save_config
from stage2_prior import GatedPixelCNN, MarginalPrior, PixelCNNConfig, sample
from stage2_prior.sampling import inverse_cdf, nucleus

K = 16


def model(dtype=torch.float64) -> GatedPixelCNN:
    torch.manual_seed(0)
    return GatedPixelCNN(K, PixelCNNConfig(hidden=16, layers=4, kernel_size=5)).to(dtype).eval()


def draw(prior, method="cached", seed=0, n=6, grid=(5, 7), **kwargs) -> torch.Tensor:
    return sample(prior, n, grid, generator=torch.Generator().manual_seed(seed), method=method, **kwargs)


# ---------------------------------------------------------------- cached == naive


@pytest.mark.parametrize("options", [{"top_p": 0.5}, {"top_p": 0.9}, {"top_k": 5, "top_p": 0.9},
                                     {"top_k": 3, "top_p": 0.5, "temperature": 0.7}])
def test_cached_and_naive_sampling_return_the_same_codes_with_top_p(options):
    prior = model()
    cached = draw(prior, "cached", **options)
    assert cached.dtype == torch.int64 and cached.shape == (6, 5, 7)
    assert torch.equal(cached, draw(prior, "naive", **options))


def test_top_p_restricts_the_draw_to_the_nucleus_of_the_model():
    """Every sampled code lies in the nucleus of its position's conditional (the model's own logits)."""
    prior = model()
    codes = draw(prior, top_p=0.5, n=8)
    with torch.no_grad():
        logits = prior(codes).permute(0, 2, 3, 1).reshape(-1, K)  # (n*H*W, K), given the sampled context
    inside = nucleus(logits.double(), 0.5)
    assert inside.gather(1, codes.reshape(-1, 1)).all()
    assert inside.sum(dim=1).lt(K).all()  # the nucleus really excludes codes at every position
    # without top_p the same seed goes outside the nucleus somewhere
    free = draw(prior, n=8)
    with torch.no_grad():
        free_logits = prior(free).permute(0, 2, 3, 1).reshape(-1, K)
    assert not nucleus(free_logits.double(), 0.5).gather(1, free.reshape(-1, 1)).all()


# ---------------------------------------------------------------- the limits of p


def test_top_p_of_one_gives_the_codes_of_no_top_p():
    prior = model()
    for method in ("cached", "naive"):
        assert torch.equal(draw(prior, method, top_p=1.0), draw(prior, method))
    marginal = MarginalPrior(torch.randn(K).log_softmax(0))
    assert torch.equal(draw(marginal, top_p=1.0), draw(marginal))


def test_a_tiny_top_p_picks_the_most_likely_code_everywhere():
    prior = model()
    codes = draw(prior, top_p=1e-6)
    assert torch.equal(codes, draw(prior, top_k=1))
    with torch.no_grad():
        assert torch.equal(prior(codes).argmax(dim=1), codes)


def test_a_smaller_top_p_changes_the_draw():
    prior = model()
    assert not torch.equal(draw(prior, top_p=0.3), draw(prior))


# ---------------------------------------------------------------- the nucleus on hand-computed logits


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p, kept", [(0.5, 1), (0.6, 2), (0.81, 3), (1.0, 3), (1e-9, 1)])
def test_nucleus_keeps_the_fewest_most_likely_codes_reaching_p(p, kept, dtype):
    logits = torch.tensor([[0.5, 0.3, 0.2]], dtype=dtype).log()
    mask = nucleus(logits, p)
    assert mask.dtype == torch.bool and mask.shape == (1, 3)
    assert mask[0].tolist() == [True] * kept + [False] * (3 - kept)


@pytest.mark.parametrize("p, expected", [(0.5, [False, True, False]), (0.6, [False, True, True]),
                                         (0.81, [True, True, True])])
def test_nucleus_ranks_codes_by_probability_not_by_index(p, expected):
    logits = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64).log()
    assert nucleus(logits, p)[0].tolist() == expected


def test_nucleus_works_row_by_row_and_breaks_ties_by_lower_index():
    logits = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5], [0.25, 0.25, 0.5]], dtype=torch.float64).log()
    mask = nucleus(logits, 0.6)
    assert mask[0].tolist() == [True, True, False]
    assert mask[1].tolist() == [True, False, True]  # 0.5 first, then the lower-index 0.25
    assert nucleus(logits[2:], 0.5)[0].tolist() == [False, False, True]


def test_inverse_cdf_with_top_p_renormalises_the_nucleus():
    """p=0.6 keeps codes 0 and 1 (mass 0.8): u below 0.5/0.8 gives code 0, above gives 1, never 2."""
    logits = torch.tensor([[0.5, 0.3, 0.2]] * 4, dtype=torch.float64).log()
    u = torch.tensor([0.0, 0.62, 0.63, 0.999], dtype=torch.float64)
    assert inverse_cdf(logits, u, top_p=0.6).tolist() == [0, 0, 1, 1]
    assert inverse_cdf(logits, u).tolist() == [0, 1, 1, 2]  # without top_p: cut points 0.5 and 0.8


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize("top_p", [0, 0.0, -0.1, 1.5, math.nan])
def test_bad_top_p_raises_value_error(top_p):
    with pytest.raises(ValueError, match="top_p"):
        draw(model(), top_p=top_p)


@pytest.mark.parametrize("top_p", ["1.5", "0", "-0.1"])
def test_pipeline_sample_refuses_a_bad_top_p(cli, tmp_path, top_p):
    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config("tiny"), run / "config.yaml")
    result = cli("pipeline", "sample", "--run", str(run), "--top-p", top_p, "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "top-p" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()
