"""Stage 2: a learned prior over the VQ-VAE's code grids, and the priors it is compared with.

    prior = GatedPixelCNN(num_embeddings, PixelCNNConfig(hidden=64, layers=8, kernel_size=3, dropout=0.1))
    prior = CodeTransformer(num_embeddings, TransformerConfig(hidden=64, layers=8, heads=4, dropout=0.1),
                            num_classes=0, grid=(7, 7))
    prior(codes, labels=None)                    # codes (B, H, W) int64 -> logits (B, K, H, W)
    sample(prior, n, (H, W), temperature=1.0, top_k=None, top_p=None, labels=None, generator=None,
           method="cached")
    bits_per_code(prior, codes)                  # mean -log2 p per code
    MarginalPrior.fit(codes, K, smoothing), UniformPrior(K)   # same interface as the learned prior

Never imports stage 1: the stages meet through the HDF5 code files and checkpoints.
"""

import importlib.util as _util  # before any import of ours: refuse a working-folder stand-in (data/shadow.py)
_spec = _util.spec_from_file_location("_vqprior_shadow", __path__[0] + "/../data/shadow.py")
_spec.loader.exec_module(_shadow := _util.module_from_spec(_spec))
_shadow.refuse("stage2_prior", ("configs", "data"))
del _util, _spec, _shadow

from data.config import PixelCNNConfig, TransformerConfig

from .baselines import PRIORS, MarginalPrior, UniformPrior
from .evaluate import bits_per_code
from .learned import build_prior, learned_prior_from_state, load_learned_prior, load_prior_checkpoint
from .pixelcnn import GatedPixelCNN
from .sampling import sample
from .transformer import CodeTransformer

__all__ = ["PRIORS", "CodeTransformer", "GatedPixelCNN", "MarginalPrior", "PixelCNNConfig",
           "TransformerConfig", "UniformPrior", "bits_per_code", "build_prior", "learned_prior_from_state",
           "load_learned_prior", "load_prior_checkpoint", "sample"]
