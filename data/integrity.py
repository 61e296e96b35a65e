"""Checksums on everything the tool writes and reads back: written with the file, checked on every load.

One rule for every file kind: a file carries the SHA-256 of its *content* (``content_digest``),
stored inside it under the name ``content_sha256``, and a load recomputes it and refuses the file
when they differ. Content, not bytes: the digest covers every tensor's dtype, shape and raw bytes
and every other value, in a fixed order, so it does not depend on how a library lays the file out.

* checkpoints (``.pt``): an entry beside the others (``data.checkpoint``);
* safetensors weights of an exported pipeline: a metadata field, over the tensors
  (``pipeline.pipeline``); ``pipeline.json``: a key, over the rest of the JSON;
* HDF5 code files: the file's user block, over every byte after it (``data.codes``);
* the image-folder store: ``index.json`` holds the digest of the decoded images and labels
  (``data.folder_store``).

What is *not* checked: files a run derives from these and recomputes when they are stale or
missing (JSON summaries, sample grids, the report), which hold numbers, not models.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

KEY = "content_sha256"


def content_digest(obj: Any) -> str:
    """SHA-256 of nested dicts, lists and tuples of tensors, arrays and plain values (str, int, float, bool,
    None): each tensor as dtype, shape and raw bytes; dict entries in key order. Equal content, equal digest."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(obj.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        digest.update(f"array {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    elif isinstance(obj, dict):
        digest.update(f"dict {len(obj)}\n".encode())
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__} {len(obj)}\n".encode())
        for value in obj:
            _feed(digest, value)
    elif isinstance(obj, np.generic):
        _feed(digest, obj.item())
    elif obj is None or isinstance(obj, (str, bool, int, float)):
        if isinstance(obj, float) and math.isnan(obj):
            obj = "nan"  # every NaN is the same content
        digest.update(f"{type(obj).__name__} {obj!r}\n".encode())
    else:
        raise TypeError(f"content_digest cannot hash a {type(obj).__name__}")


def seal(content: dict) -> dict:
    """``content`` with its digest added under ``KEY``."""
    return {**content, KEY: content_digest(content)}


def intact(sealed: dict) -> bool:
    """Whether ``sealed`` (without ``KEY`` its content) still matches the digest under ``KEY``."""
    found = sealed.get(KEY)
    return isinstance(found, str) and found == content_digest({k: v for k, v in sealed.items() if k != KEY})


def damaged(what: str, path, remedy: str) -> str:
    """The words of a checksum mismatch: which file, what it is, and how to get a good one."""
    return (f"{what} {path} is damaged: its content does not match the checksum written with it; "
            f"{remedy}")


# ---------------------------------------------------------------- HDF5: the digest in the user block

# HDF5 reserves a file's first bytes, the user block, for the user and never reads them; a code file
# keeps there the digest of every byte after it, checked before HDF5 parses anything (damaged HDF5
# metadata can make the library hang or crash rather than fail).
USER_BLOCK = 512
MAGIC = b"vqprior content_sha256 "


def seal_user_block(path) -> None:
    """Write the digest of ``path``'s bytes after its user block into the user block."""
    with open(path, "r+b") as f:
        f.seek(USER_BLOCK)
        digest = _sha256_stream(f)
        f.seek(0)
        f.write(user_block(digest))


def user_block_state(path) -> str:
    """``intact`` when ``path``'s user block holds the digest of the bytes after it, ``damaged`` when it holds
    another, ``absent`` when it holds none (a file of another kind or version)."""
    with open(path, "rb") as f:
        head = f.read(USER_BLOCK)
        if not head.startswith(MAGIC):
            return "absent"
        return "intact" if head == user_block(_sha256_stream(f)) else "damaged"


def user_block(digest: str) -> bytes:
    return (MAGIC + digest.encode() + b"\n").ljust(USER_BLOCK, b"\0")


def _sha256_stream(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()
