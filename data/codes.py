"""The HDF5 code file: the only thing stage 1 hands to stage 2 (with the checkpoint's hash).

Schema (``FORMAT_VERSION`` 2):

* the user block (the first 512 bytes, which HDF5 leaves to the user) holds the SHA-256 of every
  byte after it (``data.integrity``), checked before HDF5 reads the file;

* dataset ``codes``: (N, H, W), the smallest unsigned dtype holding K-1, chunked along N,
  gzip-compressed with the byte-shuffle filter;
* dataset ``labels``: (N,) int64, present when the source data has labels;
* dataset ``distortion_bits``: (N,) float64, present when stage 1 could measure it: each image's
  -log2 p(x | z) under the decoder's discretised likelihood, with the attributes
  ``distortion_dims`` (C*H*W, the sub-pixels per image) and ``distortion_likelihood``;
  stage 2 adds its rate to it for bits per dimension without ever loading stage 1;
* attributes ``format_version``, ``num_embeddings``, ``embedding_dim``, ``grid_height``,
  ``grid_width``, ``dataset``, ``split``, ``stage1_checkpoint_sha256``, ``num_codes``;
* attribute ``computed_from`` (JSON text, ``data.provenance``): the checkpoint, data and settings
  the file was encoded from; a run encodes a file again when it is missing or differs.

``CodeWriter`` streams batches to a temporary file that is renamed into place only when
complete; ``read_code_info`` / ``load_codes`` / ``CodeDataset`` validate everything on read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import torch

from . import integrity
from .errors import BadFile, Fix, MissingFile, UserError
from .io import WRITE_ERRORS, atomic_path, write_error
from .provenance import KEY as PROVENANCE_KEY
from .provenance import file_hash
from .rundir import RunPaths

FORMAT_VERSION = 2  # 2: the digest in the user block
CHUNK_GRIDS = 1024  # grids per HDF5 chunk: large enough to compress well, small enough to stream
REQUIRED_ATTRS = ("format_version", "num_embeddings", "embedding_dim", "grid_height", "grid_width",
                  "dataset", "split", "stage1_checkpoint_sha256")


def code_dtype(num_embeddings: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds code K-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_embeddings - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@dataclass(frozen=True)
class CodeInfo:
    path: Path
    num_codes: int  # N grids
    num_embeddings: int
    embedding_dim: int
    grid: tuple[int, int]
    dataset: str
    split: str
    stage1_checkpoint_sha256: str
    has_labels: bool
    has_distortion: bool = False


@dataclass(frozen=True)
class Distortion:
    """A code file's per-image distortion: bits (N,) float64 = -log2 p(x | z), over ``dims`` sub-pixels each."""
    bits: torch.Tensor
    dims: int
    likelihood: str


class CodeWriter:
    """Stream code grids into ``path``; the file appears there only when ``close()`` succeeds.

    >>> with CodeWriter(path, num_embeddings=512, ...) as w:
    ...     for codes, labels in batches: w.append(codes, labels)
    """

    def __init__(self, path: str | os.PathLike, *, num_embeddings: int, embedding_dim: int,
                 grid: tuple[int, int], dataset: str, split: str, stage1_checkpoint_sha256: str,
                 has_labels: bool, distortion_dims: Optional[int] = None, distortion_likelihood: str = "",
                 computed_from: Optional[dict] = None):
        self.num_embeddings = num_embeddings
        self.has_labels = has_labels
        self.has_distortion = distortion_dims is not None
        self.path = Path(path)
        self._atomic = atomic_path(path)
        self._tmp = tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w", userblock_size=integrity.USER_BLOCK)
        h, w = grid
        self._codes = self._file.create_dataset(
            "codes", shape=(0, h, w), maxshape=(None, h, w), dtype=code_dtype(num_embeddings),
            chunks=(CHUNK_GRIDS, h, w), compression="gzip", compression_opts=4, shuffle=True)
        if has_labels:
            self._labels = self._file.create_dataset(
                "labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(CHUNK_GRIDS * 16,),
                compression="gzip", compression_opts=4)
        attrs = dict(format_version=FORMAT_VERSION, num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                     grid_height=h, grid_width=w, dataset=dataset, split=split,
                     stage1_checkpoint_sha256=stage1_checkpoint_sha256)
        if self.has_distortion:
            self._distortion = self._file.create_dataset(
                "distortion_bits", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(CHUNK_GRIDS * 16,))
            attrs.update(distortion_dims=int(distortion_dims), distortion_likelihood=distortion_likelihood)
        if computed_from is not None:  # what the file was encoded from (data.provenance), as JSON text
            attrs[PROVENANCE_KEY] = json.dumps(computed_from, sort_keys=True)
        self._file.attrs.update(attrs)
        self.count = 0

    def append(self, codes: torch.Tensor, labels: Optional[torch.Tensor] = None,
               distortion_bits: Optional[torch.Tensor] = None) -> None:
        codes = codes.detach().cpu()
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self._codes.shape[1:]:
            h, w = self._codes.shape[1:]
            raise ValueError(f"codes must be (B, {h}, {w}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_embeddings):
            raise ValueError("codes out of range [0, K)")
        n = codes.shape[0]
        self._codes.resize(self.count + n, axis=0)
        self._codes[self.count:] = codes.numpy().astype(self._codes.dtype)
        if self.has_labels:
            self._labels.resize(self.count + n, axis=0)
            self._labels[self.count:] = labels.detach().cpu().numpy().astype(np.int64)
        if self.has_distortion:
            self._distortion.resize(self.count + n, axis=0)
            self._distortion[self.count:] = distortion_bits.detach().cpu().numpy().astype(np.float64)
        self.count += n

    def close(self) -> None:
        try:
            self._file.attrs["num_codes"] = self.count
            self._file.flush()  # a full disk fails here, not inside close (where HDF5 would crash)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc) if exc.errno in WRITE_ERRORS else exc from None
        try:
            self._file.close()
            integrity.seal_user_block(self._tmp)
        except OSError as exc:
            self._atomic.__exit__(type(exc), exc, None)  # removes the temporary file
            raise write_error(self.path, exc) if exc.errno in WRITE_ERRORS else exc from None
        self._atomic.__exit__(None, None, None)  # rename into place

    def abort(self) -> None:
        """Drop the file: close it without writing to the disk, then remove the temporary file.

        After a failed write (a full disk) HDF5 retries its flush when the file is closed and again
        at interpreter exit, and crashes there; pointing its descriptor at /dev/null first lets
        both flushes succeed harmlessly, since the file is deleted anyway.
        """
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._file.id.get_vfd_handle())
            os.close(null)
        except Exception:  # the file is being discarded; only the cleanup below matters
            pass
        for name in [n for n in vars(self) if n.startswith("_") and isinstance(getattr(self, n), h5py.Dataset)]:
            setattr(self, name, None)  # release the dataset handles (their flush goes to /dev/null too)
        try:
            self._file.close()
        except Exception:
            pass
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temp file

    def __enter__(self) -> "CodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self.abort()
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            raise write_error(self.path, exc) from None


def read_code_info(path: str | os.PathLike, *, split: Optional[str] = None, num_embeddings: Optional[int] = None,
                   grid: Optional[tuple[int, int]] = None,
                   stage1_checkpoint_sha256: Optional[str] = None,
                   stage1_checkpoint: Optional[str | os.PathLike] = None) -> CodeInfo:
    """Open and validate a code file's schema; optionally check it against expected split, K, grid, checkpoint.

    ``stage1_checkpoint`` (a path) is the same check as ``stage1_checkpoint_sha256`` of that file.
    A file without grids is an error: nothing can be trained or evaluated on it.
    """
    path = Path(path)
    if stage1_checkpoint is not None:
        stage1_checkpoint_sha256 = file_hash(Path(stage1_checkpoint))
    where = {"path": path, "run": RunPaths.holding(path)}
    if not path.is_file():
        raise MissingFile(f"code file not found: {path}", fix=Fix.ENCODE, **where)
    try:
        sealed = integrity.user_block_state(path)
    except OSError as exc:
        raise corrupt(path, exc) from None
    if sealed == "damaged":
        raise BadFile(integrity.damaged("code file", path, "delete it"), fix=Fix.ENCODE_AGAIN, **where)
    try:
        with h5py.File(path, "r") as f:
            info = _validate_schema(f, path)
    except UserError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError variants for truncated files
        raise corrupt(path, exc) from None
    if sealed == "absent":  # a code file of this version, whose first bytes were damaged
        raise BadFile(integrity.damaged("code file", path, "delete it"), fix=Fix.ENCODE_AGAIN, **where)
    if info.num_codes == 0:
        raise BadFile(f"{path} holds no code grids", advice="encode a non-empty split", fix=Fix.ENCODE, **where)
    if split is not None and info.split != split:
        raise BadFile(f"{path} holds the '{info.split}' split, not '{split}'", fix=Fix.ENCODE_AGAIN, **where)
    if num_embeddings is not None and info.num_embeddings != num_embeddings:
        raise BadFile(f"{path} holds codes of K={info.num_embeddings} but the model uses K={num_embeddings}",
                      advice="encode with the matching stage-1 checkpoint or fix num_embeddings", **where)
    if grid is not None and info.grid != tuple(grid):
        raise BadFile(f"{path} holds {info.grid[0]}x{info.grid[1]} grids but the model expects "
                      f"{grid[0]}x{grid[1]}", advice="use code files of the same stage-1 model", **where)
    if stage1_checkpoint_sha256 is not None and info.stage1_checkpoint_sha256 != stage1_checkpoint_sha256:
        raise BadFile(f"{path} was encoded with a different stage-1 checkpoint "
                      f"(sha256 {info.stage1_checkpoint_sha256[:12]}..., expected {stage1_checkpoint_sha256[:12]}...)",
                      fix=Fix.ENCODE_AGAIN, **where)
    return info


def code_file_digest(path: str | os.PathLike) -> str:
    """The checked digest in a code file's user block: what identifies it (``data.provenance``)."""
    info = read_code_info(path)
    with open(info.path, "rb") as f:
        return f.read(integrity.USER_BLOCK)[len(integrity.MAGIC):].split(b"\n")[0].decode()


def corrupt(path: Path, exc: Exception) -> BadFile:
    """The error for a code file that h5py cannot read (truncated, damaged, not HDF5)."""
    return BadFile(f"code file {path} is corrupt or truncated ({type(exc).__name__})", path=path,
                   fix=Fix.ENCODE_AGAIN, run=RunPaths.holding(path))


def _validate_schema(f: h5py.File, path: Path) -> CodeInfo:
    missing = [a for a in REQUIRED_ATTRS if a not in f.attrs]
    if "codes" not in f or missing:
        what = "dataset 'codes'" if "codes" not in f else f"attributes {', '.join(missing)}"
        raise BadFile(f"{path} is not a code file (missing {what})", path=path, fix=Fix.ENCODE_AGAIN,
                      run=RunPaths.holding(path))
    version = int(f.attrs["format_version"])
    if version != FORMAT_VERSION:
        raise BadFile(f"{path} has format_version {version}; this version reads {FORMAT_VERSION}", path=path,
                      fix=Fix.ENCODE_AGAIN, run=RunPaths.holding(path))
    k = int(f.attrs["num_embeddings"])
    codes = f["codes"]
    h, w = int(f.attrs["grid_height"]), int(f.attrs["grid_width"])
    if codes.ndim != 3 or codes.shape[1:] != (h, w):
        raise UserError(f"{path}: 'codes' has shape {codes.shape}, attributes say (N, {h}, {w})")
    if codes.dtype != code_dtype(k):
        raise UserError(f"{path}: 'codes' has dtype {codes.dtype}, expected {code_dtype(k)} for K={k}")
    has_labels = "labels" in f
    if has_labels and (f["labels"].shape != (codes.shape[0],) or f["labels"].dtype != np.int64):
        raise UserError(f"{path}: 'labels' must be int64 of shape ({codes.shape[0]},)")
    if "num_codes" in f.attrs and int(f.attrs["num_codes"]) != codes.shape[0]:
        raise UserError(f"{path} is truncated: {codes.shape[0]} grids, {int(f.attrs['num_codes'])} written")
    has_distortion = "distortion_bits" in f
    if has_distortion and (f["distortion_bits"].shape != (codes.shape[0],) or "distortion_dims" not in f.attrs):
        raise UserError(f"{path}: 'distortion_bits' must be float64 of shape ({codes.shape[0]},) with the "
                        "attribute distortion_dims; encode again")

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    return CodeInfo(path, codes.shape[0], k, int(f.attrs["embedding_dim"]), (h, w), text(f.attrs["dataset"]),
                    text(f.attrs["split"]), text(f.attrs["stage1_checkpoint_sha256"]), has_labels, has_distortion)


def load_distortion(path: str | os.PathLike, **expect) -> Optional[Distortion]:
    """The per-image distortion a code file holds (validated like ``load_codes``), or None when it has none."""
    info = read_code_info(path, **expect)
    if not info.has_distortion:
        return None
    try:
        with h5py.File(info.path, "r") as f:
            bits = torch.from_numpy(f["distortion_bits"][...].astype(np.float64))
            dims, likelihood = int(f.attrs["distortion_dims"]), f.attrs.get("distortion_likelihood", "")
    except Exception as exc:
        raise corrupt(info.path, exc) from None
    if not torch.isfinite(bits).all() or dims < 1:
        raise BadFile(f"{info.path} holds invalid distortion bits", path=info.path, fix=Fix.ENCODE_AGAIN,
                      run=RunPaths.holding(info.path))
    return Distortion(bits, dims, likelihood.decode() if isinstance(likelihood, bytes) else str(likelihood))


def load_codes(path: str | os.PathLike, **expect) -> tuple[torch.Tensor, Optional[torch.Tensor], CodeInfo]:
    """Read a whole code file as int64 tensors (codes (N, H, W), labels (N,) or None), validated.

    ``expect`` takes the keyword checks of ``read_code_info``.
    """
    info = read_code_info(path, **expect)
    try:
        with h5py.File(info.path, "r") as f:
            codes = torch.from_numpy(f["codes"][...].astype(np.int64))
            labels = torch.from_numpy(f["labels"][...]) if info.has_labels else None
    except Exception as exc:
        raise corrupt(info.path, exc) from None
    if codes.numel() and int(codes.max()) >= info.num_embeddings:
        raise UserError(f"{info.path} holds code {int(codes.max())} >= K={info.num_embeddings}; the file is corrupt")
    if labels is not None and labels.numel() and int(labels.min()) < 0:
        raise UserError(f"{info.path} holds a negative label ({int(labels.min())}); the file is corrupt, encode again")
    return codes, labels, info


class CodeDataset(torch.utils.data.Dataset):
    """A validated code file as a map-style dataset of ``(codes (H, W) int64, label or -1)``.

    Loads the whole file at construction (code grids are small: 10^6 grids of 8x8 uint16
    are 128 MB), so indexing costs nothing and the range check runs once.
    """

    def __init__(self, path: str | os.PathLike, **expect):
        self.codes, self.labels, self.info = load_codes(path, **expect)

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, i: int):
        label = self.labels[i] if self.labels is not None else torch.tensor(-1)
        return self.codes[i], label
