"""What a derived file was computed from, and whether it still is: the one rule for staleness.

Every file a run derives (the code files, the feature classifier, ``stage2/bits_per_code.json``,
the sample grids, ``report/quality.json``, ``report/metrics.json``) records a *fingerprint* of
its sources:

    {"inputs": {"stage2/checkpoint.pt": "<sha256>", ...}, "settings": {...}}

the SHA-256 of every run file it used (named relative to the run directory, ``RunPaths.name``;
for a checkpoint or a code file, the checked digest of its content it carries, ``data.integrity``,
so a damaged source is an error, never "changed, so recompute") and the settings it was made
with, under the name ``computed_from`` (``recorded`` reads it from every kind of file). A derived file is *current* when its recorded fingerprint equals the
one its sources give now; ``stale_reason`` says why not, in words a log can print
("stage-2 checkpoint changed since bits_per_code.json").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from . import integrity
from .io import sha256_file
from .rundir import RunPaths

KEY = "computed_from"
_hashes: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: each file is hashed once per process


def file_hash(path: Path) -> str:
    """What identifies ``path``'s content: a checkpoint's or code file's checked digest, else its SHA-256."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        if path.suffix == ".pt":
            from .checkpoint import checkpoint_digest
            _hashes[key] = checkpoint_digest(path)
        elif path.suffix == ".h5":
            from .codes import code_file_digest
            _hashes[key] = code_file_digest(path)
        else:
            _hashes[key] = sha256_file(path)
    return _hashes[key]


def fingerprint(paths: RunPaths, inputs: list[Path], settings: Optional[dict] = None) -> dict:
    """The fingerprint of the run files ``inputs`` (a missing one hashes as None) and ``settings``."""
    hashes = {paths.name(path): file_hash(path) if path.is_file() else None for path in inputs}
    return {"inputs": hashes, "settings": settings or {}}


def recorded(path: str | os.PathLike) -> Optional[dict]:
    """The fingerprint a derived file holds, or None (missing, unreadable, damaged or unstamped).

    JSON files hold it under ``computed_from``, PNG files in a text chunk, checkpoints as an
    entry and HDF5 code files as an attribute (JSON text), all of that name.
    """
    path = Path(path)
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                text = image.text.get(KEY)  # type: ignore[attr-defined]
        elif path.suffix == ".h5":
            import h5py

            if integrity.user_block_state(path) == "damaged":
                return None  # checked before HDF5 parses it: damaged metadata can hang the library
            with h5py.File(path, "r") as f:
                text = f.attrs.get(KEY)
        elif path.suffix == ".pt":
            state = _torch_load(path)
            if not isinstance(state, dict) or (integrity.KEY in state and not integrity.intact(state)):
                return None
            return state.get(KEY) or None
        else:
            obj = json.loads(path.read_text())
            return obj.get(KEY) if isinstance(obj, dict) else None
        return json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - an unreadable file is simply not current (PIL, h5py, torch raise many types)
        return None


def damaged(path: Path) -> bool:
    """Whether a checkpoint or code file holds a checksum its content no longer matches (``data.integrity``);
    asked only to word why ``recorded`` found nothing."""
    try:
        if path.suffix == ".h5":
            return integrity.user_block_state(path) == "damaged"
        if path.suffix == ".pt":
            state = _torch_load(path)
            return isinstance(state, dict) and integrity.KEY in state and not integrity.intact(state)
    except Exception:  # noqa: BLE001 - unreadable: not current, and not ours to call damaged
        return False
    return False


def _torch_load(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def stale_reason(path: str | os.PathLike, expected: dict) -> Optional[str]:
    """None when ``path`` exists and records ``expected``; else why it must be made again."""
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    found = recorded(path)
    if found is None:
        return f"{path.name} {'is damaged' if damaged(path) else 'does not record what it was computed from'}"
    for name, digest in expected["inputs"].items():
        if found.get("inputs", {}).get(name) != digest:
            return f"{RunPaths('.').describe(name)} changed since {path.name}"
    if found.get("settings") != expected["settings"]:
        changed = sorted(k for k in {*expected["settings"], *found.get("settings", {})}
                         if expected["settings"].get(k) != found.get("settings", {}).get(k))
        return f"settings {', '.join(changed)} changed since {path.name}"
    return None
