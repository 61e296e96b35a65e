"""The pipeline: composes a trained VQ-VAE and prior, samples new images, runs the whole job, reports."""

from .pipeline import PRIORS, PipelineOutput, VQPriorPipeline

__all__ = ["PRIORS", "PipelineOutput", "VQPriorPipeline"]
