"""Stage 1: the VQ-VAE that learns a codebook and turns images into grids of code indices."""

from data.config import VQVAEConfig

from .model import VQVAE, Decoder, Encoder
from .quantizer import QuantizerOutput, VectorQuantizer

__all__ = ["VQVAE", "VQVAEConfig", "Decoder", "Encoder", "QuantizerOutput", "VectorQuantizer"]
