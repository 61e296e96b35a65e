"""HDF5 code files: the encode round trip, the schema, atomic writing, and every reader check."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from data import CodeDataset, CodeWriter, code_dtype, load_codes, load_config, load_split, read_code_info
from data.codes import CHUNK_GRIDS, FORMAT_VERSION
from data.datasets import to_model_range
from data.errors import UserError
from data.provenance import file_hash, recorded
from stage1_vqvae import VQVAE
from tests.helpers import edit_code_file, rewrite_checkpoint


def test_decoding_read_codes_gives_the_models_own_reconstruction(tiny_run_template):
    run = tiny_run_template
    model = VQVAE.from_checkpoint(run / "stage1" / "checkpoint.pt")
    codes, labels, info = load_codes(run / "codes" / "val.h5")
    val = load_split(load_config(run / "config.yaml").data, "val")
    x = to_model_range(val.images)
    assert torch.equal(codes, model.encode(x))
    assert torch.equal(model.decode(codes), model.decode(model.encode(x)))
    assert torch.equal(labels, val.labels)


def test_schema_and_attributes(tiny_run_template):
    run = tiny_run_template
    sha = file_hash(run / "stage1" / "checkpoint.pt")
    for split, n in (("train", 9000), ("val", 1000)):
        with h5py.File(run / "codes" / f"{split}.h5", "r") as f:
            codes = f["codes"]
            assert codes.shape == (n, 7, 7) and codes.dtype == np.uint8  # K=32 fits in uint8
            assert codes.chunks == (CHUNK_GRIDS, 7, 7) and codes.compression == "gzip"
            assert f["labels"].shape == (n,) and f["labels"].dtype == np.int64
            attrs = dict(f.attrs)
        assert attrs["format_version"] == FORMAT_VERSION and attrs["num_embeddings"] == 32 and attrs["embedding_dim"] == 8
        assert (attrs["grid_height"], attrs["grid_width"]) == (7, 7)
        assert attrs["dataset"] == "fashion_mnist_embedded" and attrs["split"] == split
        assert attrs["stage1_checkpoint_sha256"] == sha
    info = read_code_info(run / "codes" / "train.h5", num_embeddings=32, grid=(7, 7), stage1_checkpoint_sha256=sha)
    assert info.num_codes == 9000 and info.has_labels


@pytest.mark.parametrize("k, dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16),
                                      (65537, np.uint32)])
def test_smallest_unsigned_dtype_that_holds_k_minus_1(k, dtype):
    assert code_dtype(k) == dtype


def _write(path, k=16, n=10, grid=(3, 4), labels=True, sha="abc"):
    codes = torch.randint(0, k, (n, *grid))
    with CodeWriter(path, num_embeddings=k, embedding_dim=2, grid=grid, dataset="synthetic", split="train",
                    stage1_checkpoint_sha256=sha, has_labels=labels) as w:
        for part in codes.split(4):
            w.append(part, torch.zeros(len(part), dtype=torch.int64) if labels else None)
    return codes


def test_writer_streams_batches_and_dataset_reads_them(tmp_path):
    codes = _write(tmp_path / "c.h5")
    ds = CodeDataset(tmp_path / "c.h5", num_embeddings=16)
    assert len(ds) == 10 and torch.equal(ds.codes, codes)
    grid, label = ds[3]
    assert torch.equal(grid, codes[3]) and int(label) == 0


def test_failure_during_writing_leaves_no_file(tmp_path):
    path = tmp_path / "codes.h5"
    with pytest.raises(RuntimeError):
        with CodeWriter(path, num_embeddings=8, embedding_dim=2, grid=(2, 2), dataset="d", split="train",
                        stage1_checkpoint_sha256="x", has_labels=False) as w:
            w.append(torch.zeros(3, 2, 2, dtype=torch.long))
            raise RuntimeError("crash mid-way")
    assert list(tmp_path.iterdir()) == []


def test_kill_during_writing_leaves_no_file_at_the_final_path(tmp_path):
    path = tmp_path / "codes.h5"
    script = (
        "import os, signal, torch\n"
        "from data import CodeWriter\n"
        f"w = CodeWriter({str(path)!r}, num_embeddings=8, embedding_dim=2, grid=(2, 2), dataset='d',"
        " split='train', stage1_checkpoint_sha256='x', has_labels=False)\n"
        "w.append(torch.zeros(3, 2, 2, dtype=torch.long))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    assert not path.exists()


def test_existing_file_is_kept_unless_forced(tiny_run, cli):
    path = tiny_run / "codes" / "val.h5"
    mtime = path.stat().st_mtime_ns
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run), "--split", "val")
    assert result.returncode == 0 and "up to date" in result.stdout
    assert path.stat().st_mtime_ns == mtime
    assert cli("stage1_vqvae", "encode", "--run", str(tiny_run), "--split", "val", "--force").returncode == 0
    assert path.stat().st_mtime_ns != mtime


def test_truncated_file_is_a_clear_error(tmp_path):
    _write(tmp_path / "c.h5", n=3000)
    data = (tmp_path / "c.h5").read_bytes()
    (tmp_path / "c.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="is damaged"):
        load_codes(tmp_path / "c.h5")


def test_codes_out_of_range_are_rejected(tmp_path):
    _write(tmp_path / "c.h5", k=16)
    with edit_code_file(tmp_path / "c.h5") as f:
        f["codes"][0, 0, 0] = 200  # uint8 holds it, but K=16 does not
    with pytest.raises(UserError, match="code 200 >= K=16"):
        load_codes(tmp_path / "c.h5")


def test_wrong_dtype_missing_attributes_and_version_are_rejected(tmp_path):
    _write(tmp_path / "a.h5", k=16)
    with edit_code_file(tmp_path / "a.h5") as f:
        f.attrs["num_embeddings"] = 1000  # needs uint16, file holds uint8
    with pytest.raises(UserError, match="dtype uint8, expected uint16"):
        read_code_info(tmp_path / "a.h5")
    _write(tmp_path / "b.h5")
    with edit_code_file(tmp_path / "b.h5") as f:
        del f.attrs["stage1_checkpoint_sha256"]
    with pytest.raises(UserError, match="not a code file .*stage1_checkpoint_sha256"):
        read_code_info(tmp_path / "b.h5")
    _write(tmp_path / "c.h5")
    with edit_code_file(tmp_path / "c.h5") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(UserError, match="format_version 99"):
        read_code_info(tmp_path / "c.h5")


def test_mismatched_k_grid_and_checkpoint_are_rejected(tmp_path, tiny_run_template):
    _write(tmp_path / "c.h5", k=16, grid=(3, 4), sha="abc")
    with pytest.raises(UserError, match="K=16 but the model uses K=32"):
        read_code_info(tmp_path / "c.h5", num_embeddings=32)
    with pytest.raises(UserError, match="3x4 grids but the model expects 7x7"):
        read_code_info(tmp_path / "c.h5", grid=(7, 7))
    with pytest.raises(UserError, match="different stage-1 checkpoint"):
        read_code_info(tmp_path / "c.h5", stage1_checkpoint=tiny_run_template / "stage1" / "checkpoint.pt")
    with pytest.raises(UserError, match="code file not found"):
        read_code_info(tmp_path / "missing.h5")


def test_code_files_of_another_checkpoint_or_split_are_encoded_again(tiny_run, cli):
    """Code files are derived data: ones that do not match the checkpoint and split are redone, said why."""
    rewrite_checkpoint(tiny_run / "stage1" / "checkpoint.pt", lambda ckpt: ckpt.update(step=ckpt["step"] + 1))
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run))
    assert result.returncode == 0 and "train.h5: stage-1 checkpoint changed since train.h5; encoding again" \
        in result.stdout
    assert read_code_info(tiny_run / "codes" / "val.h5").stage1_checkpoint_sha256 == \
        file_hash(tiny_run / "stage1" / "checkpoint.pt")
    shutil.copy(tiny_run / "codes" / "train.h5", tiny_run / "codes" / "val.h5")  # train copied over val
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run))
    assert result.returncode == 0 and "val.h5: settings distortion, images, split changed since val.h5; " \
        "encoding again" in result.stdout, result.stdout
    assert read_code_info(tiny_run / "codes" / "val.h5", split="val").num_codes == 1000
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run))
    assert result.returncode == 0 and "encoding again" not in result.stdout  # now current: kept


def test_a_code_file_that_records_no_sources_or_is_damaged_is_encoded_again(tiny_run, cli):
    val = tiny_run / "codes" / "val.h5"
    with edit_code_file(val) as f:
        del f.attrs["computed_from"]
    (tiny_run / "codes" / "train.h5").write_bytes(b"not HDF5")
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run))
    assert result.returncode == 0, result.stderr
    assert "val.h5: val.h5 does not record what it was computed from; encoding again" in result.stdout
    assert "train.h5: train.h5 does not record what it was computed from; encoding again" in result.stdout
    assert recorded(val)["inputs"] == {"stage1/checkpoint.pt": file_hash(tiny_run / "stage1" / "checkpoint.pt")}


def test_encode_cli_errors(tiny_run, cli):
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run / "nope"))
    assert result.returncode == 2 and "not a run directory" in result.stderr
    assert not (tiny_run / "nope").exists()
    (tiny_run / "stage1" / "checkpoint.pt").unlink()
    result = cli("stage1_vqvae", "encode", "--run", str(tiny_run), "--force")
    assert result.returncode == 2 and "stage-1 checkpoint not found" in result.stderr
