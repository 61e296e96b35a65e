"""Image datasets as in-memory uint8 tensors, and the one definition of the model's value range.

Every dataset becomes an ``ImageSet``: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)
or None. Small research datasets fit in memory, and batching by indexing a tensor is both
the fastest loader on CPU and trivially reproducible (a batch is a function of the step).

Value range: the model sees ``x / 255 - 0.5`` in [-0.5, 0.5] (as in the seed notebook), and
NMSE divides the mean squared error by the variance of the training images in that range.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import DataConfig
from .errors import UserError
from .io import atomic_path

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLIT_SEED = 20170825  # fixed, so the train/val split never depends on run.seed
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, C, H, W)
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


def data_variance(images: torch.Tensor) -> float:
    """Variance of the training images in the model range: the NMSE denominator."""
    return to_model_range(images).var().item()


def load_split(cfg: DataConfig, split: str) -> ImageSet:
    """The ``train`` or ``val`` split of the configured dataset, resized/converted as configured."""
    if split not in ("train", "val"):
        raise UserError(f"split must be 'train' or 'val', got {split!r}")
    loaders = {
        "fashion_mnist_embedded": _embedded_fashion_mnist,
        "fashion_mnist": _torchvision,
        "mnist": _torchvision,
        "cifar10": _torchvision,
        "image_folder": _image_folder,
    }
    data = loaders[cfg.dataset](cfg, split)
    return _convert(data, cfg)


# ---------------------------------------------------------------- embedded Fashion-MNIST


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST family's format): magic, dims, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"{path} is not a uint8 IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _embedded_fashion_mnist(cfg: DataConfig, split: str) -> ImageSet:
    folder = resources.files("data") / "fashion_mnist"
    images = torch.from_numpy(_read_idx(Path(str(folder / "t10k-images-idx3-ubyte.gz"))).copy())
    labels = torch.from_numpy(_read_idx(Path(str(folder / "t10k-labels-idx1-ubyte.gz"))).astype(np.int64))
    index = _split_index(len(images), cfg.val_fraction, split)
    return ImageSet(images[index].unsqueeze(1), labels[index], FASHION_MNIST_CLASSES,
                    cfg.dataset, split)


def _split_index(n: int, val_fraction: float, split: str) -> torch.Tensor:
    """A fixed random permutation: the last ``val_fraction`` of it is the validation split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = max(1, round(n * val_fraction))
    return order[n - n_val:] if split == "val" else order[: n - n_val]


# ---------------------------------------------------------------- torchvision datasets


def _torchvision(cfg: DataConfig, split: str) -> ImageSet:
    from torchvision import datasets

    cls = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[cfg.dataset]
    try:  # val = the official test split
        ds = cls(root=cfg.root, train=(split == "train"), download=cfg.download)
    except Exception as exc:
        raise UserError(
            f"could not load {cfg.dataset} from {Path(cfg.root).resolve()} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); without internet, put torchvision's "
            f"{cls.__name__} files under that folder (set data.root) and data.download=false"
        ) from None
    images = torch.as_tensor(np.asarray(ds.data))
    images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)  # CIFAR is NHWC
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return ImageSet(images.contiguous(), labels, tuple(ds.classes), cfg.dataset, split)


# ---------------------------------------------------------------- a folder of images


def _image_folder(cfg: DataConfig, split: str) -> ImageSet:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root} (set data.root to a folder of images)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images found in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    # Immediate subfolders name the classes, as in torchvision's ImageFolder; flat folders have no labels.
    class_names = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labelled = class_names and all(len(p.relative_to(root).parts) > 1 for p in files)
    index = _split_index(len(files), cfg.val_fraction, split).tolist()
    size = cfg.image_size or 32
    mode = "L" if cfg.channels == 1 else "RGB"
    images = []
    for i in index:
        try:
            with Image.open(files[i]) as img:
                img = img.convert(mode)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image {files[i]} ({type(exc).__name__}); remove or fix it") from None
        img = TF.center_crop(TF.resize(img, size), [size, size])
        images.append(TF.pil_to_tensor(img))
    labels = None
    if labelled:
        lookup = {name: k for k, name in enumerate(class_names)}
        labels = torch.tensor([lookup[files[i].relative_to(root).parts[0]] for i in index], dtype=torch.int64)
    return ImageSet(torch.stack(images), labels, tuple(class_names) if labelled else None, cfg.dataset, split)


# ---------------------------------------------------------------- size and channel conversion


def _convert(data: ImageSet, cfg: DataConfig) -> ImageSet:
    """Apply ``data.channels`` and ``data.image_size`` to a dataset loaded at its native format."""
    from torchvision.transforms import functional as TF

    images = data.images
    if cfg.channels is not None and images.shape[1] != cfg.channels:
        images = images.expand(-1, 3, -1, -1) if cfg.channels == 3 else TF.rgb_to_grayscale(images)
    if cfg.image_size is not None and images.shape[-1] != cfg.image_size and cfg.dataset != "image_folder":
        images = TF.center_crop(TF.resize(images, cfg.image_size, antialias=True), [cfg.image_size] * 2)
    data.images = images.contiguous()
    return data
