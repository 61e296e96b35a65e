"""VQPriorPipeline: a trained VQ-VAE and the priors over its codes, composed to make new images.

    pipe = VQPriorPipeline.from_run("runs/x")          # a trained run directory
    pipe.save_pretrained("exported/x")                 # safetensors weights + JSON, no pickle
    pipe = VQPriorPipeline.from_pretrained("exported/x")
    out = pipe(n=16, prior="learned", temperature=1.0, top_k=None, top_p=None, labels=None, seed=0)
    out.images   # (n, C, H, W) in the model range [-0.5, 0.5]
    out.codes    # (n, h, w) int64

``prior`` is ``learned`` (the run's gated PixelCNN or transformer), ``marginal`` (independent codes with the
training set's smoothed frequencies) or ``uniform`` (every code equally likely). Loading a run
checks that the prior was trained on codes of this very stage-1 checkpoint (by its SHA-256).

A saved pipeline is a folder of three files: ``vqvae.safetensors`` and ``prior.safetensors``
(the inference weights) and ``pipeline.json`` (both model configs, the marginal prior, the
class names, the code grid and the SHA-256 of the stage-1 checkpoint it came from).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from data import integrity
from data.checkpoint import load_checkpoint, load_weights
from data.config import VQVAEConfig, model_from_dict
from data.errors import BadFile, BadValue, Fix, MissingFile, UserError
from data.io import write_json
from data.provenance import file_hash
from data.rundir import RunPaths
from data.training import resolve_device
from stage1_vqvae import VQVAE
from stage1_vqvae.model import CHECKPOINT_KEYS as VQVAE_KEYS
from stage2_prior import PRIORS, MarginalPrior, UniformPrior, learned_prior_from_state, load_prior_checkpoint, sample
from stage2_prior.sampling import check_sampling

PRETRAINED_FORMAT = 2  # 2: content_sha256 in pipeline.json and in each safetensors file's metadata
SAMPLE_BATCH = 1024  # grids sampled and decoded at once: memory stays bounded whatever n is


@dataclass
class PipelineOutput:
    images: torch.Tensor  # (n, C, H, W), model range
    codes: torch.Tensor  # (n, h, w) int64
    labels: Optional[torch.Tensor]  # (n,) when the learned prior is conditional


class VQPriorPipeline:
    def __init__(self, vqvae: VQVAE, learned: torch.nn.Module, marginal: MarginalPrior,
                 grid: tuple[int, int], stage1_checkpoint_sha256: str = "",
                 class_names: Optional[list[str]] = None):
        self.vqvae = vqvae.eval()
        self.priors = {"learned": learned.eval(), "marginal": marginal, "uniform": UniformPrior(vqvae.num_embeddings)}
        device = next(vqvae.parameters()).device
        for prior in self.priors.values():
            prior.to(device)
        self.device, self.grid = device, tuple(grid)
        self.stage1_checkpoint_sha256 = stage1_checkpoint_sha256
        self.class_names = list(class_names or [])

    @property
    def num_embeddings(self) -> int:
        return self.vqvae.num_embeddings

    @property
    def num_classes(self) -> int:
        return self.priors["learned"].num_classes

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_run(cls, run_dir: Union[str, Path], device: str = "auto") -> "VQPriorPipeline":
        """Load the run's stage-1 and stage-2 checkpoints, checking they belong together."""
        paths = RunPaths(run_dir)
        if not paths.root.is_dir():
            raise UserError(f"run directory not found: {paths.root}")
        stage1 = load_checkpoint(paths.stage1_checkpoint, "stage1", VQVAE_KEYS)
        vqvae = VQVAE.from_state(stage1, paths.stage1_checkpoint).to(resolve_device(device)).for_inference()
        state = load_prior_checkpoint(paths.stage2_checkpoint)
        sha = file_hash(paths.stage1_checkpoint)
        if state["stage1_checkpoint_sha256"] != sha:
            raise UserError(f"the prior in {paths.stage2} was trained on codes of a different stage-1 checkpoint "
                            f"(sha256 {state['stage1_checkpoint_sha256'][:12]}..., this one is {sha[:12]}...); "
                            "re-encode and retrain stage 2 for this VQ-VAE")
        if state["num_embeddings"] != vqvae.num_embeddings:
            raise UserError(f"the prior models K={state['num_embeddings']} codes but the VQ-VAE has "
                            f"K={vqvae.num_embeddings}; retrain stage 2 for this VQ-VAE")
        return cls(vqvae, learned_prior_from_state(state, paths.stage2_checkpoint),
                   MarginalPrior(state["marginal_log_probs"]), tuple(state["grid"]), sha, stage1.get("class_names"))

    def save_pretrained(self, out_dir: Union[str, Path]) -> Path:
        """Write the inference weights (safetensors) and ``pipeline.json``; no pickle, no optimizer state.

        Each file carries the SHA-256 of its content (``data.integrity``), checked by ``from_pretrained``.
        """
        from safetensors.torch import save_file

        from data.io import atomic_path

        out = Path(out_dir)
        learned = self.priors["learned"]
        for name, module in (("vqvae", self.vqvae), ("prior", learned)):
            weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            with atomic_path(out / f"{name}.safetensors") as tmp:
                # one metadata entry: safetensors writes several in a random order, and the bytes would vary
                save_file(weights, str(tmp), metadata={integrity.KEY: integrity.content_digest(weights)})
        write_json(out / "pipeline.json", integrity.seal(json.loads(json.dumps({
            "format_version": PRETRAINED_FORMAT,
            "vqvae_config": asdict(self.vqvae.config),
            "in_channels": self.vqvae.in_channels,
            "prior_architecture": learned.architecture,
            "prior_config": asdict(learned.config),
            "num_embeddings": self.num_embeddings,
            "num_classes": self.num_classes,
            "grid": list(self.grid),
            "class_names": self.class_names,
            "marginal_log_probs": self.priors["marginal"].log_probs.cpu().tolist(),
            "stage1_checkpoint_sha256": self.stage1_checkpoint_sha256,
        }))))  # sealed as it reads back: tuples become lists
        return out

    @classmethod
    def from_pretrained(cls, folder: Union[str, Path], device: str = "auto") -> "VQPriorPipeline":
        """Load a folder written by ``save_pretrained``: samples exactly the codes ``from_run`` does."""
        folder = Path(folder)
        meta = read_pretrained_json(folder / "pipeline.json")
        weights = {name: read_weights(folder / f"{name}.safetensors") for name in ("vqvae", "prior")}
        vqvae = VQVAE(model_from_dict(VQVAEConfig, meta["vqvae_config"], f"{folder}/pipeline.json"),
                      int(meta["in_channels"]))
        load_weights(vqvae, weights["vqvae"], folder / "vqvae.safetensors")
        learned = learned_prior_from_state({  # pipeline.json without an architecture: a gated PixelCNN
            "architecture": meta.get("prior_architecture", "pixelcnn"), "model_config": meta["prior_config"],
            "num_embeddings": meta["num_embeddings"], "num_classes": meta["num_classes"], "grid": meta["grid"],
            "model": weights["prior"]}, folder / "prior.safetensors")
        vqvae = vqvae.to(resolve_device(device)).for_inference()
        marginal = MarginalPrior(torch.tensor(meta["marginal_log_probs"], dtype=torch.float32))
        return cls(vqvae, learned, marginal, tuple(meta["grid"]), meta["stage1_checkpoint_sha256"],
                   meta["class_names"])

    # ------------------------------------------------------------------ sampling

    def default_labels(self, n: int) -> Optional[torch.Tensor]:
        """Classes 0, 1, ..., C-1, 0, 1, ... for a conditional learned prior; None otherwise."""
        return torch.arange(n) % self.num_classes if self.num_classes else None

    def labels_for(self, n: int, prior: str, labels: Union[int, torch.Tensor, None]) -> Optional[torch.Tensor]:
        """The (n,) labels a draw uses: the given ones, one class for all, or the default cycle."""
        if labels is not None and (prior != "learned" or not self.num_classes):
            why = f"this prior is {prior}" if prior != "learned" else "this run trained an unconditional one"
            raise BadValue("labels", f"needs a class-conditional learned prior ({why})",
                           advice="train stage 2 with stage2.conditional=true")
        if isinstance(labels, int):
            if not 0 <= labels < self.num_classes:
                raise BadValue("labels", f"must lie in [0, {self.num_classes})", labels)
            return torch.full((n,), labels, dtype=torch.int64)
        if labels is None and prior == "learned":
            return self.default_labels(n)
        return None if labels is None else torch.as_tensor(labels, dtype=torch.int64)

    def generate(self, n: int, prior: str = "learned", temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, labels: Union[int, torch.Tensor, None] = None, seed: int = 0,
                 method: str = "cached", batch_size: int = SAMPLE_BATCH,
                 decode: bool = True) -> Iterator[PipelineOutput]:
        """Sample (and, with ``decode``, decode) ``n`` images in batches of ``batch_size``, yielding each batch.

        One generator runs through all batches, and a draw consumes it position by position,
        so the result does not depend on ``batch_size``: memory stays bounded whatever ``n`` is.
        Without ``decode`` the batches' ``images`` are None (codes only: no decoder pass).
        """
        if prior not in PRIORS:
            raise BadValue("prior", f"must be one of {', '.join(PRIORS)}", repr(prior))
        check_sampling(n, temperature, top_k, top_p, self.num_embeddings, method)
        all_labels = self.labels_for(n, prior, labels)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            chunk = all_labels[start:start + m] if all_labels is not None else None
            try:
                codes = sample(self.priors[prior], m, self.grid, temperature=temperature, top_k=top_k, top_p=top_p,
                               labels=chunk, generator=generator, method=method)
            except ValueError as exc:  # the sampler's argument checks, phrased for the user
                raise UserError(str(exc)) from None
            yield PipelineOutput(self.decode(codes) if decode else None, codes.cpu(), chunk)

    def sample_codes(self, n: int, prior: str = "learned", temperature: float = 1.0, top_k: Optional[int] = None,
                     top_p: Optional[float] = None, labels: Union[int, torch.Tensor, None] = None, seed: int = 0,
                     method: str = "cached") -> torch.Tensor:
        """(n, h, w) codes from one of the three priors (not decoded); labels only for a conditional learned prior."""
        return torch.cat([part.codes for part in self.generate(n, prior, temperature, top_k, top_p, labels, seed,
                                                                method, decode=False)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Images (n, C, H, W) in the model range for codes (n, h, w)."""
        return torch.cat([self.vqvae.decode(c.to(self.device)).cpu() for c in codes.split(batch_size)])

    def __call__(self, n: int = 64, prior: str = "learned", temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, labels: Union[int, torch.Tensor, None] = None, seed: int = 0,
                 method: str = "cached") -> PipelineOutput:
        """``n`` new images (and their codes and labels) from one of the three priors."""
        parts = list(self.generate(n, prior, temperature, top_k, top_p, labels, seed, method))
        labels = [p.labels for p in parts]
        return PipelineOutput(torch.cat([p.images for p in parts]), torch.cat([p.codes for p in parts]),
                              torch.cat(labels) if labels[0] is not None else None)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved pipeline's safetensors file, checked against the digest in its metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get(integrity.KEY)
            weights = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the weights {path} ({str(exc) or type(exc).__name__}); "
                        "export the pipeline again") from None
    if digest != integrity.content_digest(weights):
        raise BadFile(integrity.damaged("pipeline weights", path, "export the pipeline again"), path=path)
    return weights


def read_pretrained_json(path: Path) -> dict:
    """``pipeline.json`` of a saved pipeline, checked for the keys ``from_pretrained`` needs."""
    keys = ("format_version", "vqvae_config", "in_channels", "prior_config", "num_embeddings", "num_classes",
            "grid", "class_names", "marginal_log_probs", "stage1_checkpoint_sha256")
    if not path.is_file():
        raise MissingFile(f"{path} not found: not a saved pipeline", path=path, fix=Fix.EXPORT)
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; export the pipeline again") from None
    missing = [k for k in keys if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; export the pipeline again")
    if meta["format_version"] != PRETRAINED_FORMAT:
        raise UserError(f"{path} has format_version {meta['format_version']}; this version reads {PRETRAINED_FORMAT}"
                        "; export the pipeline again")
    if not integrity.intact(meta):
        raise BadFile(integrity.damaged("pipeline description", path, "export the pipeline again"), path=path)
    return meta
