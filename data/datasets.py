"""Image datasets as uint8 image arrays, and the one definition of the model's value range.

Every dataset becomes an ``ImageSet``: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)
or None. The built-in datasets are small and live in memory as tensors; an image folder is
decoded once into an on-disk store (``data.folder_store``) whose ``StoredImages`` index like a
tensor, so a folder of any size trains with flat memory. Batching by indexing is both the
fastest loader on CPU and trivially reproducible (a batch is a function of the step).

Value range: the model sees ``x / 255 - 0.5`` in [-0.5, 0.5] (as in the seed notebook), and
NMSE divides the mean squared error by the variance of the training images in that range.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .config import DataConfig
from .errors import UserError
from .folder_store import open_store
from .io import atomic_path

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLIT_SEED = 20170825  # fixed, so the train/val split never depends on run.seed


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W); for an image folder a StoredImages read from disk on demand
    labels: Optional[torch.Tensor]  # int64 (N,) or None
    class_names: Optional[tuple[str, ...]]
    dataset: str
    split: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-0.5, 0.5], the range every model in the project sees."""
    return images.float().div_(255.0).sub_(0.5)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range -> [0, 1] for saving images (clamped)."""
    return (x.float() + 0.5).clamp_(0.0, 1.0)


def save_image_grid(images: torch.Tensor, path, nrow: int, scale: int = 2, text: Optional[dict] = None) -> None:
    """Save model-range images (N, C, H, W) as one PNG grid, atomically, upscaled (nearest) to stay visible.

    ``text`` is stored as PNG text chunks (``data.provenance`` records there what a grid shows).
    """
    import torch.nn.functional as F
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from torchvision.utils import make_grid

    grid = make_grid(to_unit_range(images.detach().cpu()), nrow=nrow, padding=2, pad_value=1.0)
    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # as save_image
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="png", pnginfo=info)


def data_variance(images) -> float:
    """Variance of the training images in the model range: the NMSE denominator.

    In-memory images in one pass; a folder's stored images in chunks (float64 sums), so memory
    stays flat however many there are.
    """
    if torch.is_tensor(images):
        return to_model_range(images).var().item()
    total, squares, count = 0.0, 0.0, 0
    for chunk in images.split(4096):
        x = to_model_range(chunk).double()
        total, squares, count = total + x.sum().item(), squares + x.square().sum().item(), count + x.numel()
    mean = total / count
    return (squares - count * mean * mean) / max(count - 1, 1)


def on_device(images, device):
    """In-memory images move to the device once; stored images stay on disk, read a batch at a time."""
    return images.to(device) if torch.is_tensor(images) else images


_kept: Optional[dict[tuple[str, str], ImageSet]] = None  # the splits read inside ``splits_read_once``


@contextlib.contextmanager
def splits_read_once() -> Iterator[None]:
    """Inside the block, ``load_split`` reads each split once and hands the same ``ImageSet`` out again.

    The steps of a whole run share their splits this way (they never change one in place);
    outside it every call reads afresh, so a folder changed between calls is seen.
    """
    global _kept
    outer, _kept = _kept, ({} if _kept is None else _kept)
    try:
        yield
    finally:
        _kept = outer


def load_split(data_config: DataConfig, split: str) -> ImageSet:
    """The ``train`` or ``val`` split of the configured dataset, resized/converted as configured."""
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    if _kept is None:
        return _read_split(data_config, split)
    key = (json.dumps(dataclasses.asdict(data_config), sort_keys=True, default=str), split)
    if key not in _kept:
        _kept[key] = _read_split(data_config, split)
    return _kept[key]


def _read_split(data_config: DataConfig, split: str) -> ImageSet:
    loaders = {
        "fashion_mnist_embedded": _embedded_fashion_mnist,
        "fashion_mnist": _idx_dataset,
        "mnist": _idx_dataset,
        "cifar10": _torchvision,
        "image_folder": _image_folder,
    }
    data = loaders[data_config.dataset](data_config, split)
    if data_config.dataset == "image_folder":
        return data  # a store is made at the asked format
    return _convert(data, data_config)


# ---------------------------------------------------------------- embedded Fashion-MNIST


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzipped or not: magic, dims, then uint8 data."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    except (OSError, EOFError, struct.error, ValueError) as exc:
        raise UserError(f"cannot read IDX file {path} ({type(exc).__name__}); replace it with an intact copy") from None
    if zero != 0 or dtype_code != 0x08 or data.size != int(np.prod(shape)):
        raise UserError(f"{path} is not a complete uint8 IDX file; replace it with an intact copy")
    return data.reshape(shape)


def _embedded_fashion_mnist(data_config: DataConfig, split: str) -> ImageSet:
    folder = resources.files("data") / "fashion_mnist"
    images = torch.from_numpy(_read_idx(Path(str(folder / "t10k-images-idx3-ubyte.gz"))).copy())
    labels = torch.from_numpy(_read_idx(Path(str(folder / "t10k-labels-idx1-ubyte.gz"))).astype(np.int64))
    index = _split_index(len(images), data_config.val_fraction, split)
    return ImageSet(images[index].unsqueeze(1), labels[index], FASHION_MNIST_CLASSES,
                    data_config.dataset, split)


def _split_index(n: int, val_fraction: float, split: str) -> torch.Tensor:
    """A fixed random permutation: the last ``val_fraction`` of it is the validation split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = max(1, round(n * val_fraction))
    return order[n - n_val:] if split == "val" else order[: n - n_val]


# ---------------------------------------------------------------- MNIST and Fashion-MNIST from IDX files

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # val = the official test split
TORCHVISION_FOLDER = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}


def find_idx(root: Path, dataset: str, name: str) -> Optional[Path]:
    """``name`` (gzipped or not) directly in ``root`` (as Debian ships it) or in torchvision's ``<Name>/raw``."""
    for folder in (root, root / TORCHVISION_FOLDER[dataset] / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _idx_dataset(data_config: DataConfig, split: str) -> ImageSet:
    """MNIST / Fashion-MNIST read straight from the standard IDX files under ``data.root``.

    No download is attempted when the files are there; otherwise torchvision downloads them
    (``data.download``), and without internet the error names the files to put in place.
    """
    root = Path(data_config.root)
    names = IDX_FILES[split]
    found = [find_idx(root, data_config.dataset, name) for name in names]
    if None in found and data_config.download:
        _torchvision(data_config, split)  # downloads into root/<Name>/raw, or fails with a clear error
        found = [find_idx(root, data_config.dataset, name) for name in names]
    if None in found:
        raise UserError(f"{data_config.dataset} {split} files not found under {root.resolve()}: expected "
                        f"{' and '.join(names)} (optionally .gz) there or in "
                        f"{TORCHVISION_FOLDER[data_config.dataset]}/raw/ "
                        "(Debian's dataset-fashion-mnist ships them in /usr/share/datasets/fashion-mnist); "
                        "set data.root to that folder")
    images, labels = (_read_idx(path) for path in found)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise UserError(f"{found[0]} and {found[1]} do not hold matching images (N, H, W) and labels (N,)")
    classes = FASHION_MNIST_CLASSES if data_config.dataset == "fashion_mnist" else tuple(str(d) for d in range(10))
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                    classes, data_config.dataset, split)


# ---------------------------------------------------------------- torchvision datasets


def _torchvision(data_config: DataConfig, split: str) -> ImageSet:
    from torchvision import datasets

    by_name = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}
    cls = by_name[data_config.dataset]
    try:  # val = the official test split
        ds = cls(root=data_config.root, train=(split == "train"), download=data_config.download)
    except Exception as exc:
        raise UserError(
            f"could not load {data_config.dataset} from {Path(data_config.root).resolve()} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); without internet, put torchvision's "
            f"{cls.__name__} files under that folder (set data.root) and data.download=false"
        ) from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)  # CIFAR is NHWC
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return ImageSet(images.contiguous(), labels, tuple(ds.classes), data_config.dataset, split)


# ---------------------------------------------------------------- a folder of images


def _image_folder(data_config: DataConfig, split: str) -> ImageSet:
    """A folder's split, read from its decoded store (``data.folder_store``; decoded once, in parallel)."""
    store = open_store(data_config.root, data_config.image_size or 32, data_config.channels, data_config.cache_dir,
                       data_config.workers)
    index = _split_index(store.shape[0], data_config.val_fraction, split)
    labels = store.labels[index] if store.labels is not None else None
    return ImageSet(store.subset(index), labels, store.class_names, data_config.dataset, split)


# ---------------------------------------------------------------- size and channel conversion


def _convert(data: ImageSet, data_config: DataConfig) -> ImageSet:
    """Apply ``data.channels`` and ``data.image_size`` to a dataset loaded at its native format."""
    from torchvision.transforms import functional as TF

    images = data.images
    if data_config.channels is not None and images.shape[1] != data_config.channels:
        images = images.expand(-1, 3, -1, -1) if data_config.channels == 3 else TF.rgb_to_grayscale(images)
    size = data_config.image_size
    if size is not None and images.shape[-1] != size and data_config.dataset != "image_folder":
        images = TF.center_crop(TF.resize(images, size, antialias=True), [size] * 2)
    data.images = images.contiguous()
    return data
