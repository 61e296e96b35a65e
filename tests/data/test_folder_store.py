"""Image folders: decoded once in parallel into a store, reused, rebuilt when the folder changes, hostile files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from data import load_config, load_split
from data import folder_store
from data.errors import UserError
from tests.helpers import ROOT


def write_folder(root, n=12, mode="L", size=(20, 16)):
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / f"{'ab'[i % 2]}" / f"{i}.png")


@pytest.fixture
def folder(tmp_path):
    for name in "ab":
        (tmp_path / "images" / name).mkdir(parents=True)
    write_folder(tmp_path / "images")
    return tmp_path / "images"


def config(folder, tmp_path, *extra):
    return load_config(None, ["data.dataset=image_folder", f"data.root={folder}", "data.image_size=8",
                              f"data.cache_dir={tmp_path / 'cache'}", "data.workers=2", *extra]).data


def test_the_store_holds_the_decoded_resized_images_and_labels(folder, tmp_path):
    cfg = config(folder, tmp_path)
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    assert train.images.shape == (11, 1, 8, 8) and val.images.shape == (1, 1, 8, 8)
    assert train.class_names == ("a", "b") and sorted(train.labels.tolist() + val.labels.tolist()) == [0] * 6 + [1] * 6
    # the same pixels as a direct decode + resize + centre crop of each file
    files = sorted(folder.rglob("*.png"))
    expected = torch.stack([torch.from_numpy(folder_store.decode((str(f), "L", 8))) for f in files])
    index = torch.cat([load_split(cfg, s).images.rows for s in ("train", "val")])
    assert torch.equal(torch.cat([train.images[torch.arange(11)], val.images[0:1]]), expected[index])


def test_a_second_load_reuses_the_store_and_a_changed_folder_is_decoded_again(folder, tmp_path, monkeypatch):
    cfg = config(folder, tmp_path)

    def everything():
        return torch.cat([load_split(cfg, s).images[0:12] for s in ("train", "val")])

    first = everything()
    builds = []
    real_build = folder_store.build
    monkeypatch.setattr(folder_store, "build", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    assert torch.equal(everything(), first) and builds == []
    path = sorted(folder.rglob("*.png"))[3]
    Image.fromarray(np.zeros((16, 20), dtype=np.uint8), "L").save(path)  # same name, new content
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = everything()
    assert builds == [1] and not torch.equal(changed, first)  # rebuilt once, then found current by the other split


def test_the_store_records_the_file_list_and_any_added_touched_or_hidden_change_is_seen(folder, tmp_path):
    store = folder_store.open_store(folder, 8, None, tmp_path / "cache", workers=1, log=lambda _: None)
    recorded = [line.split("\t") for line in (store.path / "files.txt").read_text().splitlines()]
    files = sorted(folder.rglob("*.png"))
    assert recorded == [[str(f.relative_to(folder)), str(f.stat().st_size), str(f.stat().st_mtime_ns)]
                        for f in files]
    (folder / ".hidden.png").write_bytes(files[0].read_bytes())  # hidden files are not images of the set
    (folder / "notes.txt").write_text("not an image")
    logs = []
    folder_store.open_store(folder, 8, None, tmp_path / "cache", log=logs.append)
    assert logs == []
    os.utime(files[5], ns=(files[5].stat().st_atime_ns, files[5].stat().st_mtime_ns + 1))  # touched only
    folder_store.open_store(folder, 8, None, tmp_path / "cache", workers=1, log=logs.append)
    (folder / "a" / "extra.png").write_bytes(files[0].read_bytes())  # one more image
    again = folder_store.open_store(folder, 8, None, tmp_path / "cache", workers=1, log=logs.append)
    assert len(logs) == 2 and all("the folder changed" in line for line in logs) and again.shape[0] == 13


def test_a_large_folder_is_listed_by_two_processes_exactly_as_by_one(folder, monkeypatch):
    odd = folder / "b" / "new\nline.png"  # a name the child's newline-separated answer cannot carry
    odd.write_bytes((folder / "a" / "0.png").read_bytes())
    serial = folder_store.listing(folder)
    monkeypatch.setattr(folder_store, "PARALLEL_STAT_FROM", 2)
    forks, fork = [], os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    assert folder_store.listing(folder) == serial and len(serial) == 13 and forks == [1]
    odd.unlink()
    assert folder_store.listing(folder) == [line for line in serial if not line.startswith("b/new")]


def interrupted_after_three(items, **kwargs):
    for i, item in enumerate(items):
        if i == 3:
            raise KeyboardInterrupt
        yield item


def test_a_killed_build_leaves_no_store(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_store, "tqdm", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        load_split(config(folder, tmp_path, "data.workers=1"), "train")
    assert list((tmp_path / "cache" / "folders").iterdir()) == []


BUILDS = """
import shutil, signal, sys
from pathlib import Path
from data import cli, folder_store
signal.signal(signal.SIGTERM, cli._terminate)  # as every command runs
for i in range(60):
    folder_store.open_store(sys.argv[1], 8, None, cache_dir=sys.argv[2], workers=2, log=lambda *_: None)
    shutil.rmtree(sys.argv[2])
"""


def test_the_decoding_pool_stops_cleanly_under_the_commands_sigterm_handler(folder, tmp_path):
    # Inherited, the handler made workers print tracebacks as the pool stopped and at times hang it.
    result = subprocess.run([sys.executable, "-c", BUILDS, str(folder), str(tmp_path / "cache")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_reading_from_the_store_matches_for_any_index_order(folder, tmp_path):
    images = load_split(config(folder, tmp_path), "train").images
    everything = images[torch.arange(len(images))]
    order = torch.tensor([5, 0, 9, 5])
    assert torch.equal(images[order], everything[order])
    assert torch.equal(torch.cat(list(images.split(3))), everything) and torch.equal(images[2], everything[2])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    (tmp_path / "f").mkdir()
    for value in (0, 40000):
        Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(tmp_path / "f" / f"{value}.png")
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path / 'f'}", "data.image_size=8",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.val_fraction=0.5"]).data
    values = sorted(int(load_split(cfg, s).images[0].max()) for s in ("train", "val"))
    assert values == [0, 40000 >> 8]


def test_a_lab_tiff_is_converted_to_srgb(tmp_path):
    (tmp_path / "f").mkdir()
    for name, lab in (("white", (255, 128, 128)), ("black", (0, 128, 128))):  # L* 100 / 0, a* = b* = 0
        Image.new("LAB", (8, 8), lab).save(tmp_path / "f" / f"{name}.tif")
        Image.open(tmp_path / "f" / f"{name}.tif").load()
    white = folder_store.decode((str(tmp_path / "f" / "white.tif"), "RGB", 8))
    black = folder_store.decode((str(tmp_path / "f" / "black.tif"), "RGB", 8))
    assert white.min() >= 250 and black.max() <= 5


@pytest.mark.parametrize("channels", ["3", "null"])  # null: the workers first read every header for the mode
@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"not an image"), "cannot read image"),
    (lambda p: Image.new("L", (200, 200)).save(p), "decompression bomb"),  # PIL warns as it decodes
    (lambda p: Image.new("L", (300, 300)).save(p), "decompression bomb"),  # PIL refuses as it opens
])
def test_hostile_files_are_one_line_errors_naming_the_file(folder, tmp_path, monkeypatch, make, message, channels,
                                                           capfd):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # the 200x200 image counts as a bomb
    make(folder / "a" / "evil.png")
    with pytest.raises(UserError, match=message) as err:
        load_split(config(folder, tmp_path, f"data.channels={channels}"), "train")
    assert "Traceback" not in capfd.readouterr().err  # the workers print nothing as the pool stops
    assert "evil" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "cache" / "folders").iterdir()) == []  # no half store


def test_a_folder_with_one_image_is_an_error(tmp_path):
    (tmp_path / "one").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "one" / "x.png")
    with pytest.raises(UserError, match="single image"):
        load_split(load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path / 'one'}",
                                      f"data.cache_dir={tmp_path / 'cache'}"]).data, "train")


def test_an_unwritable_cache_is_a_user_error(folder, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="data.cache_dir"):
        load_split(load_config(None, ["data.dataset=image_folder", f"data.root={folder}",
                                      f"data.cache_dir={tmp_path / 'file'}"]).data, "train")


def test_a_file_gone_during_a_parallel_listing_is_a_user_error_not_a_hang(folder, monkeypatch):
    monkeypatch.setattr(folder_store, "PARALLEL_STAT_FROM", 2)
    fd = os.open(folder, os.O_RDONLY)
    try:  # the child's half is large enough to fill the pipe while the parent fails on its own half
        with pytest.raises(UserError, match="gone.png disappeared while the image folder was listed"):
            folder_store.stat_lines(fd, ["a/gone.png"] + ["a/0.png"] * 40_000)
    finally:
        os.close(fd)


def test_an_unreadable_subfolder_is_a_one_line_error_naming_it(folder, tmp_path, monkeypatch):
    # chmod cannot stop root, who runs the CI; the refusal the kernel would give is raised instead
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if path == "b" and kwargs.get("dir_fd") is not None:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(folder_store.os, "open", refusing_open)
    with pytest.raises(UserError, match=f"cannot read the folder {folder / 'b'} inside the image folder: "
                                        "permission denied"):
        load_split(config(folder, tmp_path), "train")
