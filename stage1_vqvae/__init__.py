"""Stage 1: the VQ-VAE that learns a codebook and turns images into grids of code indices."""

import importlib.util as _util  # before any import of ours: refuse a working-folder stand-in (data/shadow.py)
_spec = _util.spec_from_file_location("_vqprior_shadow", __path__[0] + "/../data/shadow.py")
_spec.loader.exec_module(_shadow := _util.module_from_spec(_spec))
_shadow.refuse("stage1_vqvae", ("configs", "data"))
del _util, _spec, _shadow

from data.config import VQVAEConfig

from .model import VQVAE, Decoder, Encoder
from .quantizer import QuantizerOutput, VectorQuantizer

__all__ = ["VQVAE", "VQVAEConfig", "Decoder", "Encoder", "QuantizerOutput", "VectorQuantizer"]
