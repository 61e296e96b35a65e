"""The transformer prior: causality, conditioning, exact cached sampling, training through the stage-2 trainer."""

import json

import pytest
import torch

from data.codes import load_codes
from data.config import TransformerConfig
from stage2_prior import CodeTransformer, bits_per_code, load_learned_prior, sample
from stage2_prior.transformer import KVCache

from tests.helpers import TINY_PRIOR, make_run

K, GRID = 16, (4, 5)
TINY = TransformerConfig(hidden=16, layers=2, heads=4, dropout=0.0)
TRANSFORMER = ["stage2.architecture=transformer", "stage2.heads=4"]


def model(num_classes=0, config=TINY, grid=GRID, seed=0):
    torch.manual_seed(seed)
    return CodeTransformer(K, config, num_classes, grid).eval()


@pytest.mark.parametrize("num_classes", [0, 3])
def test_a_later_code_never_changes_an_earlier_logit(num_classes):
    prior = model(num_classes).double()
    labels = torch.tensor([0, 2]) if num_classes else None
    codes = torch.randint(K, (2, *GRID))
    logits = prior(codes, labels)
    assert logits.shape == (2, K, *GRID)
    for t in range(GRID[0] * GRID[1]):
        i, j = divmod(t, GRID[1])
        changed = codes.clone()
        changed[:, i, j] = (changed[:, i, j] + 1) % K
        after = prior(changed, labels)
        flat, flat_after = logits.flatten(2), after.flatten(2)
        assert torch.equal(flat[..., :t + 1], flat_after[..., :t + 1])  # positions up to t never see z_t
        if t + 1 < flat.shape[-1]:
            assert not torch.allclose(flat[..., t + 1], flat_after[..., t + 1])  # the next one does


def test_the_label_changes_every_logit_of_a_conditional_prior():
    prior = model(num_classes=3)
    codes = torch.randint(K, (1, *GRID))
    a, b = prior(codes, torch.tensor([0])), prior(codes, torch.tensor([1]))
    assert not torch.isclose(a, b).all(dim=1).any()


def test_labels_are_checked_like_the_pixelcnns():
    with pytest.raises(ValueError, match="class-conditional"):
        model(num_classes=3)(torch.zeros(1, *GRID, dtype=torch.int64))
    with pytest.raises(ValueError, match="unconditional"):
        model()(torch.zeros(1, *GRID, dtype=torch.int64), torch.tensor([0]))


def test_a_grid_beyond_the_position_embeddings_is_refused_and_a_smaller_one_accepted():
    prior = model()
    with pytest.raises(ValueError, match="grids up to 4x5"):
        prior(torch.zeros(1, 5, 5, dtype=torch.int64))
    assert prior(torch.zeros(1, 3, 5, dtype=torch.int64)).shape == (1, K, 3, 5)


def test_heads_must_divide_hidden():
    with pytest.raises(ValueError, match="multiple of heads"):
        CodeTransformer(K, TransformerConfig(hidden=10, heads=4))


def test_the_cache_returns_every_position_stored_so_far():
    cache = KVCache(2, 3, 5, 4, torch.zeros(1))
    k1, v1 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    cache.append(k1, v1)
    keys, values = cache.append(k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], dim=2)) and torch.equal(values, torch.cat([v1, v2], dim=2))


@pytest.mark.parametrize("num_classes, options", [(0, {}), (3, {"labels": 1}),
                                                  (0, {"temperature": 0.8, "top_k": 5}), (0, {"top_p": 0.7})])
def test_cached_sampling_draws_exactly_the_naive_samplers_codes_in_float64(num_classes, options):
    prior = model(num_classes, TransformerConfig(hidden=16, layers=3, heads=2, dropout=0.1)).double()
    draws = {method: sample(prior, 6, GRID, generator=torch.Generator().manual_seed(3), method=method, **options)
             for method in ("naive", "cached")}
    assert torch.equal(draws["cached"], draws["naive"])
    assert draws["cached"].unique().numel() > 1


def test_dropout_is_off_while_sampling_and_the_mode_is_restored():
    prior = model(config=TransformerConfig(hidden=16, layers=2, heads=4, dropout=0.5)).train()
    draws = [sample(prior, 4, GRID, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*draws) and prior.training


def transformer_run(cli, tmp_path, *extra):
    run = make_run(tmp_path / "run", labelled=bool(extra))
    settings = [*TINY_PRIOR, *TRANSFORMER, "stage2.steps=150", "stage2.lr=3e-3", "stage2.eval_every=50", *extra]
    result = cli("stage2_prior", "train", "--run", str(run), *[a for s in settings for a in ("--set", s)])
    assert result.returncode == 0, result.stderr
    return run


def test_a_tiny_transformer_run_beats_the_marginal_prior_and_reloads_from_its_checkpoint(cli, tmp_path):
    run = transformer_run(cli, tmp_path)
    state = torch.load(run / "stage2" / "checkpoint.pt", weights_only=True)
    assert state["architecture"] == "transformer" and state["model_config"]["heads"] == 4
    prior = load_learned_prior(run / "stage2" / "checkpoint.pt")
    assert isinstance(prior, CodeTransformer) and prior.grid == (6, 6) and not prior.training
    result = cli("stage2_prior", "evaluate", "--run", str(run))
    assert result.returncode == 0, result.stderr
    bits = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    assert bits["learned"] < 0.8 * bits["marginal"]  # the stripes are predictable from their context
    val, _, _ = load_codes(run / "codes" / "val.h5")
    assert bits_per_code(prior, val) == pytest.approx(bits["learned"])


def test_a_conditional_transformer_trains_and_samples_each_class(cli, tmp_path):
    run = transformer_run(cli, tmp_path, "stage2.conditional=true")
    prior = load_learned_prior(run / "stage2" / "checkpoint.pt")
    assert prior.num_classes == 3
    codes = sample(prior, 2, (6, 6), labels=2, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 6, 6)


def test_heads_that_do_not_divide_hidden_are_a_one_line_config_error(cli, tmp_path):
    run = make_run(tmp_path / "run")
    result = cli("stage2_prior", "train", "--run", str(run), "--set", "stage2.architecture=transformer",
                 "--set", "stage2.heads=3")
    assert result.returncode == 2
    assert "stage2.hidden (64) must be a multiple of stage2.heads (3)" in result.stderr
