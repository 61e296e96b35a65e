"""VQPriorPipeline: a trained VQ-VAE and the priors over its codes, composed to make new images.

    pipe = VQPriorPipeline.from_run("runs/x")
    out = pipe(n=16, prior="learned", temperature=1.0, top_k=None, labels=None, seed=0)
    out.images   # (n, C, H, W) in the model range [-0.5, 0.5]
    out.codes    # (n, h, w) int64

``prior`` is ``learned`` (the run's gated PixelCNN), ``marginal`` (independent codes with the
training set's smoothed frequencies) or ``uniform`` (every code equally likely). Loading checks
that the prior was trained on codes of this very stage-1 checkpoint (by its SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from data.errors import UserError
from data.io import sha256_file
from data.training import resolve_device
from stage1_vqvae import VQVAE
from stage2_prior import GatedPixelCNN, MarginalPrior, UniformPrior, load_prior_checkpoint, sample

PRIORS = ("learned", "marginal", "uniform")


@dataclass
class PipelineOutput:
    images: torch.Tensor  # (n, C, H, W), model range
    codes: torch.Tensor  # (n, h, w) int64
    labels: Optional[torch.Tensor]  # (n,) when the learned prior is conditional


class VQPriorPipeline:
    def __init__(self, vqvae: VQVAE, learned: GatedPixelCNN, marginal: MarginalPrior,
                 grid: tuple[int, int], stage1_checkpoint_sha256: str = ""):
        self.vqvae = vqvae.eval()
        self.priors = {"learned": learned.eval(), "marginal": marginal, "uniform": UniformPrior(vqvae.num_embeddings)}
        device = next(vqvae.parameters()).device
        for prior in self.priors.values():
            prior.to(device)
        self.device, self.grid = device, tuple(grid)
        self.stage1_checkpoint_sha256 = stage1_checkpoint_sha256

    @property
    def num_embeddings(self) -> int:
        return self.vqvae.num_embeddings

    @property
    def num_classes(self) -> int:
        return self.priors["learned"].num_classes

    @classmethod
    def from_run(cls, run_dir: Union[str, Path], device: str = "auto") -> "VQPriorPipeline":
        """Load ``DIR/stage1/checkpoint.pt`` and ``DIR/stage2/checkpoint.pt``, checking they belong together."""
        run = Path(run_dir)
        if not run.is_dir():
            raise UserError(f"run directory not found: {run}")
        stage1 = run / "stage1" / "checkpoint.pt"
        vqvae = VQVAE.from_checkpoint(stage1, map_location=resolve_device(device))
        state = load_prior_checkpoint(run / "stage2" / "checkpoint.pt")
        sha = sha256_file(stage1)
        if state["stage1_checkpoint_sha256"] != sha:
            raise UserError(f"the prior in {run / 'stage2'} was trained on codes of a different stage-1 checkpoint "
                            f"(sha256 {state['stage1_checkpoint_sha256'][:12]}..., this one is {sha[:12]}...); "
                            "re-encode and retrain stage 2 for this VQ-VAE")
        if state["num_embeddings"] != vqvae.num_embeddings:
            raise UserError(f"the prior models K={state['num_embeddings']} codes but the VQ-VAE has "
                            f"K={vqvae.num_embeddings}; retrain stage 2 for this VQ-VAE")
        return cls(vqvae, GatedPixelCNN.from_state(state), MarginalPrior(state["marginal_log_probs"]),
                   tuple(state["grid"]), sha)

    def default_labels(self, n: int) -> Optional[torch.Tensor]:
        """Classes 0, 1, ..., C-1, 0, 1, ... for a conditional learned prior; None otherwise."""
        return torch.arange(n) % self.num_classes if self.num_classes else None

    def sample_codes(self, n: int, prior: str = "learned", temperature: float = 1.0, top_k: Optional[int] = None,
                     labels: Union[int, torch.Tensor, None] = None, seed: int = 0,
                     method: str = "cached") -> torch.Tensor:
        """(n, h, w) codes from one of the three priors; labels only for a conditional learned prior."""
        if prior not in PRIORS:
            raise UserError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if labels is not None and (prior != "learned" or not self.num_classes):
            raise UserError("--label needs a class-conditional learned prior "
                            f"({'this prior is ' + prior if prior != 'learned' else 'this run trained an unconditional one'}); "
                            "train stage 2 with stage2.conditional=true")
        if labels is None and prior == "learned":
            labels = self.default_labels(n)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        try:
            return sample(self.priors[prior], n, self.grid, temperature=temperature, top_k=top_k, labels=labels,
                          generator=generator, method=method)
        except ValueError as exc:  # the sampler's argument checks, phrased for the user
            raise UserError(str(exc)) from None

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Images (n, C, H, W) in the model range for codes (n, h, w)."""
        return torch.cat([self.vqvae.decode(c.to(self.device)).cpu() for c in codes.split(batch_size)])

    def __call__(self, n: int = 64, prior: str = "learned", temperature: float = 1.0, top_k: Optional[int] = None,
                 labels: Union[int, torch.Tensor, None] = None, seed: int = 0,
                 method: str = "cached") -> PipelineOutput:
        codes = self.sample_codes(n, prior, temperature, top_k, labels, seed, method)
        if isinstance(labels, int):
            labels = torch.full((n,), labels)
        elif labels is None and prior == "learned":
            labels = self.default_labels(n)
        return PipelineOutput(self.decode(codes), codes.cpu(), labels)
