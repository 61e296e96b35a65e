"""The one checkpoint format: every model kind saves and loads through here.

A checkpoint is a dict of tensors and plain Python data, loadable with
``torch.load(path, weights_only=True)`` (no pickled code ever runs), tagged with its
``kind``:

* ``stage1``: the VQ-VAE (``stage1_vqvae.VQVAE.from_checkpoint``), resumable;
* ``stage2``: the learned prior, gated PixelCNN or transformer (``stage2_prior.load_learned_prior``), resumable;
* ``classifier``: the feature classifier of the Fréchet distance (``pipeline.classifier``).

Every checkpoint holds ``model`` (a state dict) and ``model_config`` (``asdict`` of the
model's config dataclass); the rest depends on the kind. ``content_sha256`` is the digest of all
the other entries (``data.integrity``): a load that finds other content refuses the file. Files
are written atomically and byte-identically for identical content (serialised in memory, so the
temporary file name never enters the archive).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch
from torch import nn

from . import integrity
from .errors import BadFile, Fix, MissingFile, UserError
from .io import write_bytes
from .rundir import RunPaths

FORMAT_VERSION = 2  # 2: content_sha256
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
    torch.save(canonical(integrity.seal({"kind": kind, "format_version": FORMAT_VERSION, **entries})), buffer)
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
    """Load a ``kind`` checkpoint on the CPU with ``weights_only=True`` and check its kind, version, checksum
    and keys.

    A missing, corrupt, damaged, foreign or other-kind file is a ``UserError`` naming the step that makes the
    right one.
    """
    state, _ = _load(Path(path), kind, keys)
    return state


def checkpoint_digest(path: str | os.PathLike) -> str:
    """The checked ``content_sha256`` of a checkpoint of any kind: what identifies it (``data.provenance``)."""
    _, digest = _load(Path(path), None, ())
    return digest


def _load(path: Path, kind: str | None, keys: tuple[str, ...]) -> tuple[dict, str]:
    """The checked state (without its digest) and its digest; ``kind`` None takes any kind."""
    what, fix = KINDS[kind] if kind else ("checkpoint", None)
    where = {"path": path, "fix": fix, "run": RunPaths.holding(path)}
    if not path.is_file():
        raise MissingFile(f"{what} not found: {path}", **where)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or malicious files
        raise BadFile(f"{what} {path} is corrupt or not a checkpoint ({type(exc).__name__})", advice="delete it",
                      **where) from None
    found = state.get("kind") if isinstance(state, dict) else None
    if kind is None and found in KINDS:
        (what, fix), kind = KINDS[found], found
        where["fix"] = fix
    if found != kind or found is None:
        described = "a " + KINDS[found][0] if found in KINDS else "not a checkpoint of this version"
        raise BadFile(f"{path} is {described}" + (f", not a {what}" if kind else ""), **where)
    if state.get("format_version") != FORMAT_VERSION:
        raise BadFile(f"{what} {path} has format_version {state.get('format_version')}; this version reads "
                      f"{FORMAT_VERSION}", **where)
    if not integrity.intact(state):
        raise BadFile(integrity.damaged(what, path, "restore it from a copy, or delete it"), **where)
    digest = state.pop(integrity.KEY)
    missing = [k for k in ("model", "model_config", *keys) if k not in state]
    if missing:
        raise BadFile(f"{what} {path} lacks {', '.join(missing)}; it is damaged or from another version", **where)
    return state, digest


def load_weights(model: nn.Module, weights: dict, source: str | os.PathLike) -> nn.Module:
    """``model.load_state_dict(weights)`` (strict); weights that do not fit the model are a UserError."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise UserError(f"the weights in {source} do not fit the model its config describes ({detail})") from None
    return model
