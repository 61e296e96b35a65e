"""Image folders decoded once, in parallel, into an on-disk uint8 store that every step reuses.

A folder of images (class subfolders become labels, as in torchvision's ``ImageFolder``) is
decoded by worker processes into a store directory under ``data.cache_dir``:

    images.u8    raw uint8 array (N, C, S, S), written image by image as the workers finish
    labels.i64   raw int64 array (N,), when every image sits in a class subfolder
    files.txt    the file list: relative path, size and modification time (ns), tab-separated
    index.json   the image size, the channel count, the class names, the store format, the
                 SHA-256 of the file list (``fingerprint``), which is what a load compares, and the
                 SHA-256 of images.u8 and labels.i64, checked on every load; the index itself is
                 sealed with ``content_sha256`` (``data.integrity``)

The store is keyed by the folder's absolute path and the requested size and channels, and is
rebuilt when the file list, a size or a modification time changes. It is written to a temporary
directory and renamed into place when complete, so a killed build leaves no half store.

``StoredImages`` reads rows by index with ``os.pread``: a batch costs a few small reads, and
memory does not grow with the number of images (no memory map, whose touched pages would stay
resident). The train/val split is a fixed permutation of the files, as for the other datasets.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from . import integrity
from .errors import UserError
from .io import sha256_file

STORE_VERSION = 3  # 2: index.json holds the listing's fingerprint, files.txt the listing; 3: checksums
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vqprior`` (``~/.cache/vqprior``): user-writable, outside the data and the runs."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vqprior"


# ---------------------------------------------------------------- listing the folder


def listing(root: Path) -> list[str]:
    """One line ``relative path \\0 size \\0 mtime_ns`` per image under ``root``, sorted by path.

    What makes a store out of date, and all that a second load costs: one ``os.scandir`` walk
    that keeps image files by name (hidden files and folders skipped), then a ``stat`` of each
    relative to the open root, split across two processes for a large folder. A file name
    cannot hold ``\\0``, so the lines sort by path and their hash identifies the listing.
    """
    if not root.is_dir():
        raise UserError(f"image folder not found: {root} (set data.root to a folder of images)")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        raise UserError(f"cannot read the image folder {root}: permission denied") from None
    try:
        lines = stat_lines(fd, image_paths(fd, root))
    finally:
        os.close(fd)
    if not lines:
        raise UserError(f"no images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(lines) < 2:
        raise UserError(f"{root} holds a single image; a train/val split needs at least 2 (and a batch more)")
    lines.sort()
    return lines


def image_paths(root_fd: int, root: Path) -> list[str]:
    """Relative paths of the image files under an open folder, by name and directory entry type only."""
    paths, folders = [], [""]
    while folders:
        folder = folders.pop()
        prefix = f"{folder}/" if folder else ""
        try:
            fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root_fd)
        except PermissionError:
            raise UserError(f"cannot read the folder {root / folder} inside the image folder: permission "
                            "denied; make it readable or move it out") from None
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(prefix + name)
                    elif name[name.rfind("."):].lower() in IMAGE_SUFFIXES and entry.is_file():
                        paths.append(prefix + name)
        finally:
            os.close(fd)
    return paths


PARALLEL_STAT_FROM = 8192  # files; below this a second process costs more than it saves


def stat_lines(root_fd: int, paths: list[str]) -> list[str]:
    """``path \\0 size \\0 mtime_ns`` for each path; a forked child stats the second half of a large list."""
    if len(paths) < PARALLEL_STAT_FROM or not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return _stat_lines(root_fd, paths)
    half = len(paths) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: stat, send the lines, exit without running any of the parent's cleanup
        status = 1
        try:
            os.close(read_end)
            data = memoryview("\n".join(_stat_lines(root_fd, paths[half:])).encode("utf-8", "surrogateescape"))
            while data:
                data = data[os.write(write_end, data):]
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    pipe = os.fdopen(read_end, "rb")
    try:
        first = _stat_lines(root_fd, paths[:half])
        second = pipe.read().decode("utf-8", "surrogateescape").split("\n")
    finally:
        pipe.close()  # first, so that a child still writing (the parent failed) gets EPIPE and exits
        _, status = os.waitpid(pid, 0)
    if status != 0 or len(second) != len(paths) - half:  # the child failed, or a name held a newline
        return _stat_lines(root_fd, paths)
    return first + second


def _stat_lines(root_fd: int, paths: list[str]) -> list[str]:
    lines = []
    for path in paths:
        try:
            stat = os.stat(path, dir_fd=root_fd)
        except FileNotFoundError:
            raise UserError(f"{path} disappeared while the image folder was listed; run again when "
                            "the folder is no longer changing") from None
        except PermissionError:
            raise UserError(f"cannot read {path} in the image folder: permission denied") from None
        lines.append(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return lines


def fingerprint(lines: list[str]) -> str:
    """SHA-256 of a ``listing``: the store records it, so checking a store needs no file list read back."""
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def relative_path(line: str) -> str:
    return line.split("\0", 1)[0]


def class_names_of(rel_paths: list[str]) -> Optional[list[str]]:
    """Immediate subfolders name the classes when every image sits in one; a flat folder has none."""
    parts = [Path(p).parts for p in rel_paths]
    if not all(len(p) > 1 for p in parts):
        return None
    return sorted({p[0] for p in parts})


# ---------------------------------------------------------------- decoding (runs in the workers)


def plain_signals() -> None:
    """A worker ends at once on SIGTERM, the pool's own way to stop it, and leaves Ctrl-C to the parent.

    The command's SIGTERM handler (``data.cli``), inherited through fork, would raise inside the worker
    instead: a traceback per worker as the pool stops, and now and then a worker left waiting on the
    pool's queue lock, which the stopping parent holds, so that the parent waits for it forever.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


BOMB = "error: image {path} is too large to decode safely (a decompression bomb?); remove or shrink it"


def image_mode(path: str) -> str:
    """``L`` when the image is grayscale (including a gray palette), else ``RGB``; reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            palette = img.getpalette() if img.mode == "P" else None
            gray_palette = palette is not None and palette[0::3] == palette[1::3] == palette[2::3]
            return "L" if img.mode in GRAYSCALE_MODES or gray_palette else "RGB"
    except Image.DecompressionBombError:
        return BOMB.format(path=path)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"error: cannot read image {path} ({type(exc).__name__}); remove or fix it"


def decode(task: tuple[str, str, int]):
    """(path, mode, size) -> uint8 array (C, size, size), or an error string naming the file.

    Resizes the shorter side to ``size`` (bilinear, antialiased) and crops the centre, as
    torchvision's ``resize`` + ``center_crop`` do. 16-bit grayscale is scaled to 8 bits.
    Decompression bombs and modes PIL cannot convert are refused with the file's name.
    """
    from PIL import Image, UnidentifiedImageError

    path, mode, size = task
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = to_mode(img, mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return BOMB.format(path=path)
    except ValueError as exc:
        return f"error: cannot convert image {path} to {mode} ({exc}); convert it to RGB or grayscale"
    except (UnidentifiedImageError, OSError) as exc:
        return f"error: cannot read image {path} ({type(exc).__name__}); remove or fix it"
    width, height = img.size
    short, long_ = (width, height) if width <= height else (height, width)
    new_long = int(size * long_ / short)
    img = img.resize((size, new_long) if width <= height else (new_long, size), Image.BILINEAR)
    left, top = int(round((img.width - size) / 2.0)), int(round((img.height - size) / 2.0))
    array = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()


def to_mode(img, mode: str):
    """``img`` as ``L`` or ``RGB``: 16-bit grayscale scaled down (not clipped), CIELAB colour-managed
    to sRGB, transparent pixels black; a mode PIL cannot convert raises ValueError (refused)."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L") and mode == "L":
        wide = np.asarray(img, dtype=np.int64)
        shift = 8 if wide.max(initial=0) > 255 else 0
        return Image.fromarray((wide >> shift).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "LAB":  # CIELAB, as TIFFs may hold it: colour-managed to sRGB (PIL's convert garbles it)
        from PIL import ImageCms

        lab_to_srgb = ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("LAB"),
                                                               ImageCms.createProfile("sRGB"), "LAB", "RGB")
        img = ImageCms.applyTransform(img, lab_to_srgb)
    if img.mode in ("LA", "RGBA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))  # transparent pixels become black
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert(mode)


# ---------------------------------------------------------------- building and opening the store


def store_path(cache_dir: Path, root: Path, size: int, channels: Optional[int]) -> Path:
    key = hashlib.sha256(f"{root.resolve()}|{size}|{channels}|v{STORE_VERSION}".encode()).hexdigest()[:16]
    return cache_dir / "folders" / f"{root.resolve().name}-{key}"


def open_store(root: str | os.PathLike, size: int, channels: Optional[int], cache_dir: Optional[str] = None,
               workers: Optional[int] = None, log=print) -> "FolderStore":
    """The folder's store, decoding the folder first when there is none or it is out of date."""
    root = Path(root)
    lines = listing(root)
    path = store_path(Path(cache_dir) if cache_dir else default_cache_dir(), root, size, channels)
    index = read_index(path)
    if index is not None and index["fingerprint"] == fingerprint(lines):
        return FolderStore(path, index)
    why = "no store yet" if index is None else "the folder changed since it was decoded"
    log(f"decoding {len(lines)} images of {root} into {path} ({why})")
    build(path, root, lines, size, channels, workers or os.cpu_count() or 1)
    return FolderStore(path, read_index(path))


def read_index(path: Path) -> Optional[dict]:
    """The store's index; None when there is none or it is of another version (the store is rebuilt)."""
    try:
        index = json.loads((path / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("version") != STORE_VERSION:
        return None
    if not integrity.intact(index):
        raise damaged_store(path)
    return index


def damaged_store(path: Path) -> UserError:
    return UserError(integrity.damaged("the image store", path, "delete it to decode the folder again"))


def build(path: Path, root: Path, lines: list[str], size: int, channels: Optional[int], workers: int) -> None:
    """Decode every file with ``workers`` processes into a temporary store, then rename it to ``path``."""
    rel_paths = [relative_path(line) for line in lines]
    files = [str(root / rel) for rel in rel_paths]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot write the image store under {path.parent} ({exc.strerror}); "
                        "set data.cache_dir to a writable folder") from None
    try:
        images_digest = hashlib.sha256()
        with multiprocessing.get_context("fork").Pool(workers, initializer=plain_signals) as pool:
            mode = {1: "L", 3: "RGB"}.get(channels) or native_mode(pool, files)
            with open(tmp / "images.u8", "wb") as out:
                tasks = ((f, mode, size) for f in files)
                for array in tqdm(pool.imap(decode, tasks, chunksize=64), total=len(files), desc="decode images",
                                  unit="img", dynamic_ncols=True):
                    if isinstance(array, str):
                        raise UserError(array.removeprefix("error: "))
                    raw = array.tobytes()
                    out.write(raw)
                    images_digest.update(raw)
        names, labels_digest = class_names_of(rel_paths), None
        if names is not None:
            lookup = {name: k for k, name in enumerate(names)}
            labels = np.array([lookup[Path(rel).parts[0]] for rel in rel_paths], dtype=np.int64)
            (tmp / "labels.i64").write_bytes(labels.tobytes())
            labels_digest = hashlib.sha256(labels.tobytes()).hexdigest()
        (tmp / "files.txt").write_text("".join(line.replace("\0", "\t") + "\n" for line in lines),
                                       encoding="utf-8", errors="surrogateescape")
        index = {"version": STORE_VERSION, "root": str(root.resolve()), "size": size,
                 "channels": 1 if mode == "L" else 3, "count": len(files), "class_names": names,
                 "fingerprint": fingerprint(lines), "images_sha256": images_digest.hexdigest(),
                 "labels_sha256": labels_digest}
        (tmp / "index.json").write_text(json.dumps(integrity.seal(index)))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write the image store {path} ({exc.strerror}); free space or set data.cache_dir") \
            from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def native_mode(pool, files: list[str]) -> str:
    """``L`` when every image is grayscale, else ``RGB`` (headers read by the workers)."""
    mode = "L"
    for found in pool.imap(image_mode, files, chunksize=256):
        if found.startswith("error: "):
            raise UserError(found.removeprefix("error: "))
        if found == "RGB":
            mode = "RGB"
    return mode


class FolderStore:
    """An opened store: ``images(indices)`` reads rows, ``labels`` and ``class_names`` describe them."""

    def __init__(self, path: Path, index: dict):
        self.path, self.index = path, index
        self.shape = (index["count"], index["channels"], index["size"], index["size"])
        self.class_names = tuple(index["class_names"]) if index["class_names"] else None
        labels = path / "labels.i64"
        try:
            found = (sha256_file(path / "images.u8"), sha256_file(labels) if labels.exists() else None)
        except OSError:
            found = None
        if found != (index["images_sha256"], index["labels_sha256"]):
            raise damaged_store(path)
        self.labels = torch.from_numpy(np.fromfile(labels, dtype=np.int64)) if labels.exists() else None

    def subset(self, indices: torch.Tensor) -> "StoredImages":
        return StoredImages(self.path / "images.u8", self.shape[1:], indices)


class StoredImages:
    """uint8 images (N, C, H, W) of a store, read on demand: indexing, slicing and ``split`` give tensors."""

    def __init__(self, file: Path, image_shape: tuple[int, int, int], rows: torch.Tensor):
        self.file, self.image_shape, self.rows = file, tuple(image_shape), rows.to(torch.int64)
        self.row_bytes = int(np.prod(self.image_shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.image_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        wanted = self.rows[index] if not torch.is_tensor(index) else self.rows[index.cpu()]
        out = np.empty((len(wanted), self.row_bytes), dtype=np.uint8)
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for i, row in enumerate(wanted.tolist()):
                out[i] = np.frombuffer(os.pread(fd, self.row_bytes, row * self.row_bytes), dtype=np.uint8)
        finally:
            os.close(fd)
        return torch.from_numpy(out).view(len(wanted), *self.image_shape)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):
            yield self[start:start + size]
