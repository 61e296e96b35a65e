"""VectorQuantizer against its documented maths, one test per behaviour."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from stage1_vqvae import VectorQuantizer
from stage1_vqvae.quantizer import first_argmin

K, D = 16, 4


def make_inputs(seed=0, b=3, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, h, w, generator=g, requires_grad=True)


def flat(z):
    return rearrange(z, "b d h w -> (b h w) d")


def test_indices_are_the_euclidean_argmin():
    vq = VectorQuantizer(K, D)
    vq.codebook.data = torch.randn(K, D)
    z = make_inputs()
    expected = torch.cdist(flat(z.detach()), vq.codebook.detach()).argmin(1)
    out = vq(z)
    assert out.indices.dtype == torch.int64 and out.indices.shape == (3, 5, 6)
    assert torch.equal(out.indices.flatten(), expected)


@pytest.mark.parametrize("k", [512, 96, 32, 7])
def test_blocked_argmin_equals_argmin_including_ties(k):
    scores = torch.randn(300, k)
    scores[:50] = 0.0  # every code tied: the first wins
    scores[50:100, k // 2] = scores[50:100, k - 1] = -9.0  # a tie between two blocks
    scores[100:150, 1] = scores[100:150, 2] = -9.0  # a tie inside one block
    assert torch.equal(first_argmin(scores), scores.argmin(1))


def test_quantized_value_is_the_looked_up_code():
    vq = VectorQuantizer(K, D)
    vq.codebook.data = torch.randn(K, D)
    z = make_inputs()
    out = vq(z)
    expected = rearrange(vq.codebook[out.indices], "b h w d -> b d h w")
    torch.testing.assert_close(out.quantized, expected, atol=1e-6, rtol=0)


def test_straight_through_gradient_is_exactly_the_identity():
    vq = VectorQuantizer(K, D)
    z = make_inputs()
    upstream = torch.randn_like(z)
    (vq(z).quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


def test_output_gradient_does_not_reach_the_codebook():
    vq = VectorQuantizer(K, D)
    z = make_inputs()
    (vq(z).quantized * torch.randn_like(z)).sum().backward()
    assert vq.codebook.grad is None or torch.count_nonzero(vq.codebook.grad) == 0


def test_loss_is_codebook_term_plus_beta_times_commitment_term():
    beta = 0.7
    vq = VectorQuantizer(K, D, commitment_cost=beta)
    vq.codebook.data = torch.randn(K, D)
    z = make_inputs()
    out = vq(z)
    q = vq.codebook.detach()[out.indices.flatten()]
    mse = F.mse_loss(q, flat(z.detach()))
    torch.testing.assert_close(out.loss, (1 + beta) * mse)


def test_beta_weights_the_commitment_term_and_not_the_codebook_term():
    grads = {}
    for beta in (0.25, 5.0):
        vq = VectorQuantizer(K, D, commitment_cost=beta)
        vq.codebook.data = torch.randn(K, D, generator=torch.Generator().manual_seed(1))
        z = make_inputs()
        out = vq(z)
        out.loss.backward()
        q = vq.codebook.detach()[out.indices.flatten()]
        n = z.numel()
        # d/dz beta * mean((z - sg q)^2) = 2 beta (z - q) / n
        expected_z = rearrange(2 * beta * (flat(z.detach()) - q) / n, "(b h w) d -> b d h w", b=3, h=5, w=6)
        torch.testing.assert_close(z.grad, expected_z)
        grads[beta] = vq.codebook.grad.clone()
    # the codebook gradient comes from mean((e - sg z)^2) alone: independent of beta
    assert torch.count_nonzero(grads[0.25]) > 0
    torch.testing.assert_close(grads[0.25], grads[5.0])


def test_codebook_gradient_matches_the_codebook_term():
    vq = VectorQuantizer(K, D)
    vq.codebook.data = torch.randn(K, D)
    z = make_inputs()
    out = vq(z)
    out.loss.backward()
    idx, zf = out.indices.flatten(), flat(z.detach())
    expected = torch.zeros(K, D).index_add_(0, idx, 2 * (vq.codebook.detach()[idx] - zf) / zf.numel())
    torch.testing.assert_close(vq.codebook.grad, expected)


def test_learned_codebook_init_is_uniform_in_plus_minus_one_over_k():
    vq = VectorQuantizer(K, D)
    assert vq.codebook.abs().max() <= 1 / K
    assert isinstance(vq.codebook, torch.nn.Parameter)


def test_ema_update_follows_its_formula():
    decay, eps = 0.9, 1e-3
    vq = VectorQuantizer(K, D, decay=decay, epsilon=eps)
    codebook0 = torch.randn(K, D)
    vq.embedding.copy_(codebook0)
    vq.ema_weight.copy_(codebook0)
    z = make_inputs()
    out = vq(z)  # training mode: one EMA step
    idx, zf = out.indices.flatten(), flat(z.detach())
    counts = torch.bincount(idx, minlength=K).float()
    sums = torch.zeros(K, D).index_add_(0, idx, zf)
    n_k = decay * 1.0 + (1 - decay) * counts  # N starts at 1
    m_k = decay * codebook0 + (1 - decay) * sums  # m starts at e
    total = n_k.sum()
    smoothed = (n_k + eps) / (total + K * eps) * total
    torch.testing.assert_close(vq.ema_cluster_size, n_k)
    torch.testing.assert_close(vq.ema_weight, m_k)
    torch.testing.assert_close(vq.codebook, m_k / smoothed[:, None])
    # the output of this step used the codebook before the update
    torch.testing.assert_close(out.quantized, rearrange(codebook0[out.indices], "b h w d -> b d h w"))


def test_ema_loss_is_the_commitment_term_only_and_codebook_gets_no_gradient():
    beta = 0.25
    vq = VectorQuantizer(K, D, commitment_cost=beta, decay=0.99)
    vq.embedding.normal_()
    z = make_inputs()
    before = vq.codebook.clone()
    vq.eval()  # no update, so the codebook the loss saw is the one we compare against
    out = vq(z)
    q = before[out.indices.flatten()]
    torch.testing.assert_close(out.loss, beta * F.mse_loss(flat(z.detach()), q))
    assert not vq.codebook.requires_grad
    assert "embedding" not in dict(vq.named_parameters())


def test_eval_mode_changes_nothing():
    vq = VectorQuantizer(K, D, decay=0.9, dead_code_steps=1, init="random")
    vq.initialized.fill_(True)
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.eval()
    vq(make_inputs())
    for k, v in vq.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_unused_code_stays_put_under_ema():
    vq = VectorQuantizer(K, D, decay=0.9)
    far = torch.full((D,), 100.0)
    vq.embedding[0] = far
    vq.ema_weight[0] = far
    for seed in range(5):
        vq(make_inputs(seed))
    torch.testing.assert_close(vq.codebook[0], far, rtol=1e-4, atol=0)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_dead_codes_are_reseeded_from_current_encoder_outputs(decay):
    steps = 3
    vq = VectorQuantizer(K, D, decay=decay, dead_code_steps=steps)
    dead = torch.full((D,), 1e3)  # never the nearest code
    vq.embedding.data[5] = dead
    if decay:
        vq.ema_weight[5] = dead
    z = make_inputs()
    for _ in range(steps - 1):
        vq(z)
        torch.testing.assert_close(vq.codebook[5], dead, rtol=1e-3, atol=0)  # EMA smoothing nudges it
    vq(z)
    new = vq.codebook[5].detach()
    assert not torch.equal(new, dead)
    distances = (flat(z.detach()) - new).norm(dim=1)
    assert distances.min() < 1e-5  # re-seeded exactly onto one of this step's encoder outputs
    assert vq.unused_steps[5] == 0


def test_random_init_takes_codes_from_the_first_batch():
    vq = VectorQuantizer(K, D, init="random")
    assert not bool(vq.initialized)
    z = make_inputs()
    vq(z)
    zf = flat(z.detach())
    assert bool(vq.initialized)
    assert all((zf - code).norm(dim=1).min() < 1e-6 for code in vq.codebook.detach())


def test_kmeans_init_quantizes_better_than_random_init():
    z = make_inputs(b=8, h=8, w=8)
    errors = {}
    for init in ("random", "kmeans"):
        torch.manual_seed(0)
        vq = VectorQuantizer(K, D, init=init)
        vq(z)
        vq.eval()
        errors[init] = F.mse_loss(vq(z).quantized, z).item()
    assert errors["kmeans"] < 0.8 * errors["random"]


def test_perplexity_and_codes_used():
    vq = VectorQuantizer(4, 2)
    vq.eval()
    vq.codebook.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    all_four = rearrange(vq.codebook.detach().repeat(3, 1), "(b h w) d -> b d h w", b=1, h=3, w=4)
    out = vq(all_four)
    torch.testing.assert_close(out.perplexity, torch.tensor(4.0))
    assert int(out.codes_used) == 4
    one = torch.zeros(1, 2, 3, 4)
    out = vq(one)
    torch.testing.assert_close(out.perplexity, torch.tensor(1.0))
    assert int(out.codes_used) == 1


def test_bf16_autocast_keeps_distances_and_ema_in_fp32():
    vq = VectorQuantizer(K, D, decay=0.9)
    vq.embedding.normal_()
    vq.ema_weight.copy_(vq.embedding)
    z = make_inputs()
    expected = torch.cdist(flat(z.detach()), vq.codebook).argmin(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert torch.equal(out.indices.flatten(), expected)
    assert vq.codebook.dtype == vq.ema_weight.dtype == vq.ema_cluster_size.dtype == torch.float32


def _sync_worker(rank, world, port, decay, result_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    vq = VectorQuantizer(K, D, decay=decay, init="random", dead_code_steps=2)
    torch.manual_seed(100 + rank)  # each process sees different data and draws different restarts
    for step in range(4):
        z = torch.randn(2, D, 3, 3) + rank
        vq(z)
    torch.save(vq.state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _spawn_two(worker, *args):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, *args), nprocs=2, join=True)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_multi_process_codebooks_stay_identical(tmp_path, decay):
    _spawn_two(_sync_worker, decay, str(tmp_path))
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _uneven_reseed_worker(rank, world, port, result_dir):
    """Rank 0 has 3 badly quantised outputs, rank 1 none (its batch sits exactly on code 0)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    vq = VectorQuantizer(4, 2, dead_code_steps=1)
    vq.codebook.data = torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]])
    points = torch.zeros(8, 2)
    if rank == 0:
        points[:3] = torch.tensor([[5.0, -5.0], [-4.0, 6.0], [3.0, 3.0]])
    vq(rearrange(points, "(b h w) d -> b d h w", b=1, h=2, w=4))
    torch.save(vq.state_dict(), os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_reseeding_agrees_across_ranks_with_different_numbers_of_candidates(tmp_path):
    _spawn_two(_uneven_reseed_worker, str(tmp_path))
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(a["embedding"], b["embedding"])
    moved = a["embedding"][1:]  # the three dead codes now sit on rank 0's outliers
    assert sorted(map(tuple, moved.tolist())) == [(-4.0, 6.0), (3.0, 3.0), (5.0, -5.0)]


def test_dead_codes_go_where_the_quantisation_error_is():
    vq = VectorQuantizer(4, 2, dead_code_steps=1)
    vq.codebook.data = torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]])
    background = torch.zeros(40, 2)  # exactly on code 0: zero error
    outliers = torch.tensor([[5.0, -5.0], [-4.0, 6.0]])  # also nearest to code 0, but far from it
    z = rearrange(torch.cat([background, outliers]), "(b h w) d -> b d h w", b=1, h=6, w=7)
    for seed in range(5):
        torch.manual_seed(seed)
        vq.codebook.data[1:] = torch.tensor([[50.0, 50.0], [60.0, 60.0], [70.0, 70.0]])
        vq.unused_steps.zero_()
        vq(z)  # codes 1-3 are dead after one unused step
        reseeded = vq.codebook.detach()[1:]
        # only the two outliers have non-zero error, so only they can receive a code; the third stays
        assert {tuple(r.tolist()) for r in reseeded[:2]} <= {(5.0, -5.0), (-4.0, 6.0)}
        assert not (reseeded == 0).all(dim=1).any()
