"""The learned prior's two architectures, built from a config or loaded from a stage-2 checkpoint.

    build_prior(num_embeddings, config, num_classes, grid)   # a PixelCNNConfig or TransformerConfig
    load_learned_prior(path)                                  # the trained prior of a checkpoint
    learned_prior_from_state(state, source)                   # ... of an already loaded one

A stage-2 checkpoint names its ``architecture``; one without the key holds a gated PixelCNN
(checkpoints written before the transformer existed).
"""

from __future__ import annotations

import os

from torch import nn

from data.checkpoint import load_checkpoint, load_weights
from data.config import PRIOR_CONFIGS, TransformerConfig, model_from_dict
from data.errors import UserError

from .pixelcnn import GatedPixelCNN
from .transformer import CodeTransformer

# Beyond model and model_config: what sampling and evaluation need; training adds optimizer, step, rng, ...
CHECKPOINT_KEYS = ("num_embeddings", "num_classes", "grid", "stage1_checkpoint_sha256", "marginal_log_probs")


def build_prior(num_embeddings: int, config, num_classes: int, grid: tuple[int, int]) -> nn.Module:
    """A new learned prior of the architecture ``config`` describes; ``grid`` sizes the transformer's positions."""
    if isinstance(config, TransformerConfig):
        return CodeTransformer(num_embeddings, config, num_classes, tuple(grid))
    return GatedPixelCNN(num_embeddings, config, num_classes)


def learned_prior_from_state(state: dict, source: str | os.PathLike = "the checkpoint") -> nn.Module:
    """The trained prior of a loaded stage-2 checkpoint (or exported pipeline), in eval mode, on the CPU.

    Its weights are the moving average (``ema``) when training kept one, else the last ones.
    """
    architecture = state.get("architecture", "pixelcnn")
    if architecture not in PRIOR_CONFIGS:
        raise UserError(f"{source} holds a prior of unknown architecture {architecture!r}")
    config = model_from_dict(PRIOR_CONFIGS[architecture], state["model_config"], str(source))
    model = build_prior(int(state["num_embeddings"]), config, int(state["num_classes"]), state["grid"])
    return load_weights(model, state.get("ema", state["model"]), source).eval()


def load_learned_prior(path: str | os.PathLike) -> nn.Module:
    """The trained prior of a stage-2 checkpoint file, in eval mode, on the CPU."""
    return learned_prior_from_state(load_prior_checkpoint(path), path)


def load_prior_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check a stage-2 checkpoint (``weights_only``); a missing or foreign file is a UserError."""
    return load_checkpoint(path, "stage2", CHECKPOINT_KEYS)

