"""The pipeline: composes a trained VQ-VAE and prior, samples new images, runs the whole job, reports."""

import importlib.util as _util  # before any import of ours: refuse a working-folder stand-in (data/shadow.py)
_spec = _util.spec_from_file_location("_vqprior_shadow", __path__[0] + "/../data/shadow.py")
_spec.loader.exec_module(_shadow := _util.module_from_spec(_spec))
_shadow.refuse("pipeline", ("configs", "data", "stage1_vqvae", "stage2_prior"))
del _util, _spec, _shadow

from .pipeline import PRIORS, PipelineOutput, VQPriorPipeline

__all__ = ["PRIORS", "PipelineOutput", "VQPriorPipeline"]
