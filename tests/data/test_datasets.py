"""Datasets: the embedded Fashion-MNIST, torchvision errors offline, image folders, value range."""

from __future__ import annotations

import gzip
import hashlib
import struct
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

from data import load_config, load_split, to_model_range, to_unit_range
from data.datasets import data_variance
from data.errors import UserError

# sha256 of Debian's dataset-fashion-mnist files (/usr/share/datasets/fashion-mnist/)
DEBIAN_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


def test_embedded_files_are_byte_identical_to_debian_and_licensed():
    folder = resources.files("data") / "fashion_mnist"
    for name, digest in DEBIAN_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert "Zalando" in (folder / "LICENSE").read_text()


def test_embedded_split_is_deterministic_disjoint_and_complete():
    cfg = load_config(None).data
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert train.images.shape == (9000, 1, 28, 28) and val.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.num_classes == 10 and set(val.labels.tolist()) == set(range(10))
    again = load_split(cfg, "val")
    assert torch.equal(again.images, val.images)
    # no val image appears in train (compare by content hash)
    seen = {bytes(img.numpy()) for img in train.images}
    assert sum(bytes(img.numpy()) in seen for img in val.images) <= 2  # the source has a few exact duplicates


def test_value_range_and_variance():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    x = to_model_range(images)
    assert x.flatten().tolist() == [-0.5, 0.5]
    assert to_unit_range(x).flatten().tolist() == [0.0, 1.0]
    assert data_variance(images) == pytest.approx(0.5)  # unbiased variance of {-0.5, 0.5}


def test_torchvision_dataset_offline_gives_a_clear_error(tmp_path):
    cfg = load_config(None, ["data.dataset=cifar10", f"data.root={tmp_path}", "data.download=false"]).data
    with pytest.raises(UserError, match="could not load cifar10 .* put torchvision's CIFAR10 files"):
        load_split(cfg, "train")


def test_missing_idx_files_are_named_in_the_error(tmp_path):
    cfg = load_config(None, ["data.dataset=mnist", f"data.root={tmp_path}", "data.download=false"]).data
    with pytest.raises(UserError, match="expected train-images-idx3-ubyte and train-labels-idx1-ubyte"):
        load_split(cfg, "train")


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    """An IDX file: two zero bytes, dtype 0x08 (uint8), the number of dimensions, the sizes, the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("layout", ["flat-gz", "torchvision-raw"])
def test_idx_files_are_read_offline_flat_gzipped_or_in_torchvisions_layout(tmp_path, layout, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "__init__",
                        lambda *a, **k: pytest.fail("no download may be attempted when the files are there"))
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    folder, gz = (tmp_path, True) if layout == "flat-gz" else (tmp_path / "FashionMNIST" / "raw", False)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    data = load_split(load_config(None, ["data.dataset=fashion_mnist", f"data.root={tmp_path}"]).data, "val")
    assert torch.equal(data.images, torch.from_numpy(images.astype(np.uint8)).unsqueeze(1))
    assert data.labels.tolist() == [3, 1, 4, 1, 5] and data.class_names[3] == "Dress"


def test_a_truncated_idx_file_is_a_user_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)), gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="not a complete uint8 IDX file"):
        load_split(load_config(None, ["data.dataset=mnist", f"data.root={tmp_path}"]).data, "train")


def _write_images(folder, n, size=(40, 30), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, size, color=(i * 20 % 255, 10, 200)[: len(mode)] if mode == "RGB" else i * 20).save(
            folder / f"img{i}.png")


def test_image_folder_with_class_subfolders(tmp_path):
    _write_images(tmp_path / "cats", 6)
    _write_images(tmp_path / "dogs", 4)
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}", "data.image_size=16",
                             "data.val_fraction=0.2"]).data
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert train.images.shape == (8, 3, 16, 16) and val.images.shape == (2, 3, 16, 16)
    assert train.class_names == ("cats", "dogs")
    assert sorted(train.labels.tolist() + val.labels.tolist()) == [0] * 6 + [1] * 4


def test_image_folder_flat_grayscale_has_no_labels(tmp_path):
    _write_images(tmp_path, 5, mode="L")
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}", "data.image_size=8",
                             "data.channels=1", "data.val_fraction=0.2"]).data
    train = load_split(cfg, "train")
    assert train.images.shape == (4, 1, 8, 8) and train.labels is None


@pytest.mark.parametrize("modes, channels", [(("L", "L"), 1), (("L", "RGB"), 3), (("RGB", "RGB"), 3)])
def test_image_folder_loads_in_its_own_mode(tmp_path, modes, channels):
    """One channel when every image is grayscale, RGB otherwise; data.channels still overrides."""
    for i, mode in enumerate(modes):
        _write_images(tmp_path / f"part{i}", 5, mode=mode)
    native = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}", "data.image_size=8"]).data
    assert load_split(native, "train").images.shape[1] == channels
    forced = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}", "data.image_size=8",
                                f"data.channels={4 - channels}"]).data
    assert load_split(forced, "train").images.shape[1] == 4 - channels


def test_image_folder_errors(tmp_path):
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}"]).data
    with pytest.raises(UserError, match="no images found"):
        load_split(cfg, "train")
    _write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path}", "data.val_fraction=0.5"]).data
    with pytest.raises(UserError, match="cannot read image .*broken.png"):
        load_split(cfg, "train")
    missing = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path / 'nope'}"]).data
    with pytest.raises(UserError, match="image folder not found"):
        load_split(missing, "train")


def test_resize_and_channel_conversion_of_a_builtin_dataset():
    cfg = load_config(None, ["data.image_size=32", "data.channels=3"]).data
    val = load_split(cfg, "val")
    assert val.images.shape == (1000, 3, 32, 32) and val.images.dtype == torch.uint8
