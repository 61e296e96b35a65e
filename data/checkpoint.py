"""The one checkpoint format: every model kind saves and loads through here.

A checkpoint is a dict of tensors and plain Python data, loadable with
``torch.load(path, weights_only=True)`` (no pickled code ever runs), tagged with its
``kind``:

* ``stage1``: the VQ-VAE (``stage1_vqvae.VQVAE.from_checkpoint``), resumable;
* ``stage2``: the learned prior, gated PixelCNN or transformer (``stage2_prior.load_learned_prior``), resumable;
* ``classifier``: the feature classifier of the Fréchet distance (``pipeline.classifier``).

Every checkpoint holds ``model`` (a state dict) and ``model_config`` (``asdict`` of the
model's config dataclass); the rest depends on the kind. Files are written atomically and
byte-identically for identical content (serialised in memory, so the temporary file name
never enters the archive), which keeps their SHA-256, the run's provenance, reproducible.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import BadFile, Fix, MissingFile, UserError
from .io import write_bytes
from .rundir import RunPaths

FORMAT_VERSION = 1
KINDS = {  # kind -> (what it is called, the step that makes it)
    "stage1": ("stage-1 checkpoint", Fix.TRAIN_STAGE1),
    "stage2": ("stage-2 checkpoint", Fix.TRAIN_STAGE2),
    "classifier": ("feature classifier checkpoint", Fix.RUN),
}


def save_checkpoint(path: str | os.PathLike, kind: str, **entries) -> None:
    """Atomically write ``{"kind", "format_version", **entries}`` to ``path``."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    buffer = io.BytesIO()
    torch.save(canonical({"kind": kind, "format_version": FORMAT_VERSION, **entries}), buffer)
    write_bytes(path, buffer.getvalue())


def canonical(obj):
    """A copy of nested dicts, lists and tuples with every string interned.

    Pickle writes an object seen before as a back-reference, so equal strings that are one
    object in one run (interned literals) and two in another (keys read back from a resumed
    checkpoint) would pickle to different bytes.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(canonical(v) for v in obj)
    return obj


def load_checkpoint(path: str | os.PathLike, kind: str, keys: tuple[str, ...] = ()) -> dict:
    """Load a ``kind`` checkpoint on the CPU with ``weights_only=True`` and check its kind and keys.

    A missing, corrupt, foreign or other-kind file is a ``UserError`` naming the step that makes the right one.
    """
    path, (what, fix) = Path(path), KINDS[kind]
    where = {"path": path, "fix": fix, "run": RunPaths.holding(path)}
    if not path.is_file():
        raise MissingFile(f"{what} not found: {path}", **where)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or malicious files
        raise BadFile(f"{what} {path} is corrupt or not a checkpoint ({type(exc).__name__})", advice="delete it",
                      **where) from None
    found = state.get("kind") if isinstance(state, dict) else None
    if found != kind:
        described = "a " + KINDS[found][0] if found in KINDS else "not a checkpoint of this version"
        raise BadFile(f"{path} is {described}, not a {what}", **where)
    if state.get("format_version") != FORMAT_VERSION:
        raise BadFile(f"{what} {path} has format_version {state.get('format_version')}; this version reads "
                      f"{FORMAT_VERSION}", **where)
    missing = [k for k in ("model", "model_config", *keys) if k not in state]
    if missing:
        raise BadFile(f"{what} {path} lacks {', '.join(missing)}; it is damaged or from another version", **where)
    return state


def load_weights(model: nn.Module, weights: dict, source: str | os.PathLike) -> nn.Module:
    """``model.load_state_dict(weights)`` (strict); weights that do not fit the model are a UserError."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise UserError(f"the weights in {source} do not fit the model its config describes ({detail})") from None
    return model
