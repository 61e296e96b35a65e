"""Stage 1: the VQ-VAE that learns a codebook and turns images into grids of code indices."""

from .model import VQVAE, Decoder, Encoder
from .quantizer import QuantizerOutput, VectorQuantizer

__all__ = ["VQVAE", "Decoder", "Encoder", "QuantizerOutput", "VectorQuantizer"]
