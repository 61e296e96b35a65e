"""The VQ-VAE of the seed notebook: a ResNet encoder, the vector quantiser, a mirrored decoder.

    encoder:  [4x4 stride-2 conv, ReLU] x downsamples -> 3x3 conv -> residual stack -> 1x1 conv to D
    decoder:  3x3 conv from D -> residual stack -> [4x4 stride-2 transposed conv, ReLU] x downsamples
              (no ReLU after the last one)
    residual block: x + 1x1(ReLU(3x3(ReLU(x)))), the stack ending in a ReLU.

The seed notebook uses 2 residual blocks on each side. ``encoder_residual_layers`` sets the
encoder's separately: every 3x3 block after 2 downsamplings widens what one code sees by 8
pixels, and an encoder without blocks gives local codes that a prior predicts far better.

With 2 downsamplings a 28x28 image becomes a 7x7 grid of codes, 32x32 becomes 8x8.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import torch
from einops import rearrange
from torch import nn

from data.checkpoint import load_checkpoint, load_weights
from data.config import VQVAEConfig, model_from_dict

from .quantizer import QuantizerOutput, VectorQuantizer


CHECKPOINT_KEYS = ("in_channels",)  # beyond model and model_config; training adds optimizer, step, rng, ...


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
    reconstruction: torch.Tensor  # (B, C, H, W), model range, unclamped
    vq: QuantizerOutput


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
        self.decoder = Decoder(in_channels, c.hidden, c.residual_hidden, c.residual_layers, c.downsamples,
                               c.embedding_dim)
        self.downsample_factor = 2 ** c.downsamples

    @property
    def num_embeddings(self) -> int:
        return self.quantizer.num_embeddings

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return image_size[0] // self.downsample_factor, image_size[1] // self.downsample_factor

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        vq = self.quantizer(self.encoder(x))
        return VQVAEOutput(self.decoder(vq.quantized), vq)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the model range (B, C, H, W) -> code indices (B, h, w) int64."""
        z = self.encoder(x)
        indices = self.quantizer.nearest(rearrange(z, "b d h w -> (b h w) d"))
        return rearrange(indices, "(b h w) -> b h w", b=z.shape[0], h=z.shape[2], w=z.shape[3])

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> images (B, C, H, W) in the model range [-0.5, 0.5]."""
        return self.decoder(self.quantizer.lookup(indices)).float().clamp(-0.5, 0.5)

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

        Channels-last runs the encoder 1.3-1.4x faster on CPU (oneDNN; benchmarks/RESULTS.md);
        training and the decoder gain nothing from it, so they keep the default layout.
        """
        self.encoder.to(memory_format=torch.channels_last)
        return self.eval()
