"""The gated PixelCNN: shapes, the autoregressive (raster-order) dependency structure, labels."""

import pytest
import torch

from data.config import Stage2Config
from stage2_prior import GatedPixelCNN, PixelCNNConfig

K = 16


def default_depth_model(**kwargs) -> GatedPixelCNN:
    cfg = Stage2Config()
    torch.manual_seed(0)
    config = PixelCNNConfig(hidden=8, layers=cfg.layers, kernel_size=cfg.kernel_size)
    return GatedPixelCNN(K, config, **kwargs).double().eval()


def test_logits_cover_every_code_at_every_position():
    model = GatedPixelCNN(K, PixelCNNConfig(hidden=8, layers=2, kernel_size=3))
    logits = model(torch.randint(K, (2, 5, 7)))
    assert logits.shape == (2, K, 5, 7)


def test_each_position_depends_on_exactly_the_earlier_positions():
    """Perturbing the code at q changes the logits at every p > q and at no p <= q (raster order)."""
    model = default_depth_model()
    h = w = 8
    codes = torch.randint(K, (1, h, w), generator=torch.Generator().manual_seed(1))
    perturbed = codes.repeat(h * w, 1, 1)
    q = torch.arange(h * w)
    perturbed.view(h * w, -1)[q, q] = (perturbed.view(h * w, -1)[q, q] + 1) % K  # grid q changes position q
    with torch.no_grad():
        change = (model(perturbed) - model(codes)).abs().amax(dim=1).view(h * w, h * w)
    depends = change > 0  # depends[q, p]: the logits at p moved when the code at q changed
    assert torch.equal(depends, torch.ones(h * w, h * w, dtype=torch.bool).triu(diagonal=1))


def test_label_shifts_the_logits_of_a_conditional_model():
    model = default_depth_model(num_classes=3)
    codes = torch.randint(K, (1, 4, 4)).repeat(3, 1, 1)
    with torch.no_grad():
        logits = model(codes, torch.arange(3))
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])


def test_conditional_model_requires_labels_in_range():
    model = GatedPixelCNN(K, PixelCNNConfig(hidden=8, layers=2, kernel_size=3), num_classes=3)
    codes = torch.zeros(2, 3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="class-conditional"):
        model(codes)
    with pytest.raises(ValueError, match="labels must lie"):
        model(codes, torch.tensor([0, 3]))


def test_unconditional_model_rejects_labels():
    model = GatedPixelCNN(K, PixelCNNConfig(hidden=8, layers=2, kernel_size=3))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.zeros(2, 3, 3, dtype=torch.int64), torch.tensor([0, 1]))


@pytest.mark.parametrize("kernel_size", [1, 4])
def test_kernel_size_must_be_odd_and_at_least_three(kernel_size):
    with pytest.raises(ValueError, match="kernel_size"):
        GatedPixelCNN(K, PixelCNNConfig(kernel_size=kernel_size))
