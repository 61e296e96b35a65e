"""The VQ-VAE of the seed notebook: a ResNet encoder, the vector quantiser, a mirrored decoder.

    encoder:  [4x4 stride-2 conv, ReLU] x downsamples -> 3x3 conv -> residual stack -> 1x1 conv to D
    decoder:  3x3 conv from D -> residual stack -> [4x4 stride-2 transposed conv, ReLU] x downsamples
              (no ReLU after the last one)
    residual block: x + 1x1(ReLU(3x3(ReLU(x)))), the stack ending in a ReLU.

The seed notebook uses 2 residual blocks on each side. ``encoder_residual_layers`` sets the
encoder's separately: every 3x3 block after 2 downsamplings widens what one code sees by 8
pixels, and an encoder without blocks gives local codes that a prior predicts far better.

With 2 downsamplings a 28x28 image becomes a 7x7 grid of codes, 32x32 becomes 8x8.

The decoder also defines a likelihood p(x | z) of the 8-bit image (``likelihood.py``), which
makes -log2 p(x | z_q(x)), the distortion in bits, a code length:

* ``gaussian`` (the default): the decoder outputs the mean and trains on MSE; after training,
  one scale per channel is fitted by maximum likelihood on training images
  (``fit_pixel_scale``) and kept in the buffer ``pixel_log_scale`` of the state dict;
* ``logistic``: the decoder's last layer outputs 2C channels, a mean and a log-scale per
  sub-pixel, and trains on the discretised-logistic NLL (PixelCNN++).

Either way ``decode`` returns the means, clamped to the data range.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Optional

import torch
from einops import rearrange
from torch import nn

from data.checkpoint import load_checkpoint, load_weights
from data.config import VQVAEConfig, model_from_dict

from .likelihood import LOG_SCALE_MIN, fit_log_scale, nll_bits
from .quantizer import QuantizerOutput, VectorQuantizer


CHECKPOINT_KEYS = ("in_channels",)  # beyond model and model_config; training adds optimizer, step, rng, ...
FIT_IMAGES = 2000  # training images (evenly spaced) whose reconstructions the Gaussian scale is fitted on


class ResidualStack(nn.Module):
    def __init__(self, channels: int, hidden: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
                          nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False))
            for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return torch.relu(x)


def _widths(hidden: int, downsamples: int) -> list[int]:
    """Channel widths along the strided path: hidden/2 for all but the last, hidden for the last."""
    return [hidden // 2] * (downsamples - 1) + [hidden]


class Encoder(nn.Module):
    def __init__(self, in_channels: int, hidden: int, residual_hidden: int, residual_layers: int,
                 downsamples: int, embedding_dim: int):
        super().__init__()
        layers, width = [], in_channels
        for out in _widths(hidden, downsamples):
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        self.net = nn.Sequential(
            *layers,
            nn.Conv2d(hidden, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
            nn.Conv2d(hidden, embedding_dim, 1),  # "pre-VQ" projection to the code dimension
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, out_channels: int, hidden: int, residual_hidden: int, residual_layers: int,
                 downsamples: int, embedding_dim: int):
        super().__init__()
        widths = _widths(hidden, downsamples)[::-1] + [out_channels]  # hidden, hidden/2, ..., out
        layers = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
            if i < downsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(
            nn.Conv2d(embedding_dim, hidden, 3, padding=1),
            ResidualStack(hidden, residual_hidden, residual_layers),
            *layers,
        )

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.net(q)


@dataclass
class VQVAEOutput:
    reconstruction: torch.Tensor  # (B, C, H, W), model range, unclamped: the decoder's means
    vq: QuantizerOutput
    log_scale: Optional[torch.Tensor] = None  # (B, C, H, W) per sub-pixel (logistic likelihood), else None


class VQVAE(nn.Module):
    """Encoder -> VectorQuantizer -> Decoder, built from a ``VQVAEConfig`` (the config's defaults).

    ``in_channels`` comes from the data (1 grayscale, 3 RGB), not from the config.
    """

    def __init__(self, config: VQVAEConfig = VQVAEConfig(), in_channels: int = 1):
        super().__init__()
        self.config, self.in_channels = config, in_channels
        c = config
        self.encoder = Encoder(in_channels, c.hidden, c.residual_hidden, c.encoder_residual_layers, c.downsamples,
                               c.embedding_dim)
        self.quantizer = VectorQuantizer(c.num_embeddings, c.embedding_dim, c.commitment_cost, c.decay, c.epsilon,
                                         init=c.codebook_init, dead_code_steps=c.dead_code_steps)
        self.likelihood = c.likelihood
        out_channels = in_channels * (2 if c.likelihood == "logistic" else 1)  # logistic: means, then log-scales
        self.decoder = Decoder(out_channels, c.hidden, c.residual_hidden, c.residual_layers, c.downsamples,
                               c.embedding_dim)
        self.downsample_factor = 2 ** c.downsamples
        if c.likelihood == "gaussian":  # NaN until fit_pixel_scale
            self.register_buffer("pixel_log_scale", torch.full((in_channels,), float("nan")))

    @property
    def num_embeddings(self) -> int:
        return self.quantizer.num_embeddings

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return image_size[0] // self.downsample_factor, image_size[1] // self.downsample_factor

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        vq = self.quantizer(self.encoder(x))
        mean, log_scale = self.decoder_outputs(vq.quantized)
        return VQVAEOutput(mean, vq, log_scale)

    def decoder_outputs(self, quantized: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(means, log-scales or None) of the decoder for quantised vectors (B, D, h, w).

        The logistic decoder's log-scales are clamped below at ``LOG_SCALE_MIN`` (as PixelCNN++).
        """
        out = self.decoder(quantized)
        if self.likelihood != "logistic":
            return out, None
        mean, log_scale = out.chunk(2, dim=1)
        return mean, log_scale.clamp(min=LOG_SCALE_MIN)

    @property
    def can_measure_distortion(self) -> bool:
        """Whether ``distortion_bits`` is defined: a logistic decoder, or a Gaussian one with a fitted scale."""
        return self.likelihood == "logistic" or bool(torch.isfinite(self.pixel_log_scale).all())

    @torch.no_grad()
    def distortion_bits(self, x: torch.Tensor, indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        """-log2 p(x | z_q(x)) per image (B,) float64: the discretised likelihood of every 8-bit sub-pixel.

        ``x`` holds exact levels k/255 - 0.5 (``to_model_range`` of uint8 images); ``indices``
        are its codes (encoded here when not given).
        """
        if not self.can_measure_distortion:
            raise ValueError("the Gaussian pixel scale is not fitted; call fit_pixel_scale(train_images) first")
        indices = self.encode(x) if indices is None else indices
        mean, log_scale = self.decoder_outputs(self.quantizer.lookup(indices))
        if log_scale is None:
            log_scale = rearrange(self.pixel_log_scale, "c -> 1 c 1 1")
        return nll_bits(x, mean.float(), log_scale.float(), self.likelihood)

    @torch.no_grad()
    def fit_pixel_scale(self, images, batch_size: int = 500) -> torch.Tensor:
        """Fit the Gaussian likelihood's scale per channel by maximum likelihood; returns the log-scales (C,).

        Reconstructs up to ``FIT_IMAGES`` evenly spaced uint8 ``images`` (N, C, H, W) and, per
        channel c, maximises sum log P(x | mean, s_c) of the discretised Gaussian over s_c
        (``likelihood.fit_log_scale``). A logistic decoder has nothing to fit.
        """
        if self.likelihood != "gaussian":
            return torch.empty(0)
        device = self.pixel_log_scale.device
        index = torch.linspace(0, len(images) - 1, min(FIT_IMAGES, len(images))).round().long().unique()
        chosen = images[index]
        xs, means = [], []
        for start in range(0, len(chosen), batch_size):
            x = chosen[start:start + batch_size].to(device).float().div(255.0).sub(0.5)
            xs.append(x.double().cpu())
            means.append(self.decoder_outputs(self.quantizer.lookup(self.encode(x)))[0].double().cpu())
        x, mean = torch.cat(xs), torch.cat(means)
        fitted = [fit_log_scale(x[:, c], mean[:, c], "gaussian", seed=c) for c in range(x.shape[1])]
        self.pixel_log_scale.copy_(torch.tensor(fitted, dtype=self.pixel_log_scale.dtype))
        return self.pixel_log_scale.clone()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the model range (B, C, H, W) -> code indices (B, h, w) int64."""
        z = self.encoder(x)
        indices = self.quantizer.nearest(rearrange(z, "b d h w -> (b h w) d"))
        return rearrange(indices, "(b h w) -> b h w", b=z.shape[0], h=z.shape[2], w=z.shape[3])

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> images (B, C, H, W) in the model range [-0.5, 0.5]: the clamped means."""
        return self.decoder_outputs(self.quantizer.lookup(indices))[0].float().clamp(-0.5, 0.5)

    @classmethod
    def from_checkpoint(cls, path: str | PathLike, map_location: str | torch.device = "cpu") -> "VQVAE":
        """Rebuild a trained model from a stage-1 checkpoint, ready for inference (``for_inference``)."""
        state = load_checkpoint(path, "stage1", CHECKPOINT_KEYS)
        return cls.from_state(state, path).to(map_location).for_inference()

    @classmethod
    def from_state(cls, state: dict, source: str | PathLike = "the checkpoint") -> "VQVAE":
        """The model of a loaded stage-1 checkpoint (``model``, ``model_config``, ``in_channels``)."""
        config = model_from_dict(VQVAEConfig, state["model_config"], f"stage-1 checkpoint {source}")
        return load_weights(cls(config, int(state["in_channels"])), state["model"], source)

    def for_inference(self) -> "VQVAE":
        """Eval mode, with the encoder's weights in channels-last layout.

        Channels-last runs the encoder faster on CPU (oneDNN; docs/results.md, "Encoding to HDF5");
        training and the decoder gain nothing from it, so they keep the default layout.
        """
        self.encoder.to(memory_format=torch.channels_last)
        return self.eval()

