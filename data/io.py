"""File I/O that never leaves half-written files: atomic writes, hashes, metrics logs, RNG state.

Every file is written under a temporary name in the destination folder and renamed into
place with ``os.replace`` once complete, so a crash or kill leaves either the old file or
the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .errors import UserError


# Write failures that are the user's to fix (disk, permissions), as the words an error prints.
WRITE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.ENOTDIR: "a parent is a file, not a folder",
                errno.EISDIR: "it is a directory"}


def write_error(path: Path, exc: OSError) -> UserError:
    """A one-line error for a failed write of ``path``; earlier complete files are untouched."""
    reason = WRITE_ERRORS.get(exc.errno, exc.strerror or type(exc).__name__)
    return UserError(f"cannot write {path}: {reason}; nothing was changed there, fix it and run the command again")


def check_output_path(path: Path) -> None:
    """Refuse output paths that cannot be files: a directory, or one below a file."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
            break


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file is removed whatever happens (an error, Ctrl-C, SIGTERM through
    ``data.cli``); a full disk or a read-only folder is a one-line ``UserError``.
    """
    path = Path(path)
    check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; finished files get the usual permissions
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:
            raise write_error(path, exc) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step, appended and flushed as it happens.

    On resume, entries after the checkpoint's step are dropped first so a resumed run's log
    matches an uninterrupted one.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            write_text(self.path, "")
        else:
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def logged_time(path: str | os.PathLike, step: int) -> float:
    """Training seconds up to ``step``, from a metrics log's ``train_time_s`` (wall time stays out of
    checkpoints, which are byte-identical for identical runs); 0 when none is logged."""
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step and "train_time_s" in r]
    return float(rows[-1]["train_time_s"]) if rows else 0.0


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics log: JSON objects of numbers (``step`` a count), strings, booleans and nulls.

    A torn last line (a kill while appending) ends the log quietly; any other malformed row is a
    one-line error naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a torn last line from a kill: everything before it is valid
            raise UserError(f"{path} line {number} is not JSON; remove the line or the file") from None
        problem = metrics_row_problem(row)
        if problem:
            raise UserError(f"{path} line {number} is not a metrics row ({problem}); remove the line or the file")
        rows.append(row)
    return rows


def metrics_row_problem(row) -> Optional[str]:
    """Why ``row`` cannot be a metrics row, or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    step = row.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step {step!r} is not a count"
    for key, value in row.items():
        if not (value is None or isinstance(value, (int, float, str, bool))):
            return f"{key} holds a {type(value).__name__}"
    return None


def capture_rng() -> dict:
    """Every RNG a training loop touches, as tensors (checkpoint-safe)."""
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "torch": state["torch"],
        "cuda": state.get("cuda", []),
        "python": repr(state["python"]),
        "numpy": [state["numpy"][0], torch.from_numpy(state["numpy"][1].copy()), *state["numpy"][2:]],
    }


def restore_rng(state: dict) -> None:
    import ast
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
