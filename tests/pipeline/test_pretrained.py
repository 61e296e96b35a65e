"""Saved pipelines: save_pretrained / from_pretrained (safetensors + JSON) and ``pipeline export``."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from data.config_files import load_config
from data.datasets import FASHION_MNIST_CLASSES
from data.errors import UserError
from data.provenance import file_hash
from pipeline import VQPriorPipeline

from tests.helpers import TINY_PRIOR, one_line_error, run_cli

FILES = {"vqvae.safetensors", "prior.safetensors", "pipeline.json"}
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def finished(fast_run) -> Path:
    return fast_run


@pytest.fixture(scope="module")
def saved(finished, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("saved") / "pipe"
    VQPriorPipeline.from_run(finished, device="cpu").save_pretrained(out)
    return out


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: an 8-byte little-endian length, then that much JSON."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert 8 + length <= len(data)
    return json.loads(data[8:8 + length])


# ---------------------------------------------------------------- 1. what save_pretrained writes


def test_save_pretrained_writes_exactly_safetensors_and_json(saved):
    assert {p.name for p in saved.iterdir()} == FILES
    for path in saved.iterdir():
        head = path.read_bytes()[:4]
        assert head[:2] != b"PK"  # torch.save's zip archive
        assert head[:1] != b"\x80" or path.suffix == ".safetensors"  # a raw pickle (protocol >= 2)
    for name in ("vqvae", "prior"):
        header = safetensors_header(saved / f"{name}.safetensors")
        assert set(header.pop("__metadata__")) == {"content_sha256"}
        assert header and all({"dtype", "shape", "data_offsets"} <= set(v) for v in header.values())
    json.loads((saved / "pipeline.json").read_text())
    assert not list(saved.rglob("*.pt")) and not list(saved.rglob("*.pkl")) and not list(saved.rglob("*.bin"))


def test_safetensors_hold_the_weights_of_the_run(finished, saved):
    from safetensors.torch import load_file

    stage1 = torch.load(finished / "stage1" / "checkpoint.pt", weights_only=True)
    stage2 = torch.load(finished / "stage2" / "checkpoint.pt", weights_only=True)
    for name, state in (("vqvae", stage1["model"]), ("prior", stage2["model"])):
        weights = load_file(str(saved / f"{name}.safetensors"))
        assert weights.keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(weights[key], value), (name, key)


def test_pipeline_json_holds_configs_marginal_class_names_grid_and_stage1_sha(finished, saved):
    meta = json.loads((saved / "pipeline.json").read_text())
    config = load_config(finished / "config.yaml")
    assert meta["vqvae_config"] == asdict(config.stage1.model_config())
    assert meta["prior_config"] == asdict(config.stage2.model_config())
    assert meta["num_embeddings"] == 32 and meta["in_channels"] == 1 and meta["num_classes"] == 0
    stage2 = torch.load(finished / "stage2" / "checkpoint.pt", weights_only=True)
    marginal = torch.tensor(meta["marginal_log_probs"], dtype=torch.float32)
    assert marginal.shape == (32,)
    assert torch.equal(marginal, torch.as_tensor(stage2["marginal_log_probs"], dtype=torch.float32))
    assert meta["class_names"] == FASHION_NAMES == list(FASHION_MNIST_CLASSES)
    assert meta["grid"] == [7, 7]
    assert meta["stage1_checkpoint_sha256"] == file_hash(finished / "stage1" / "checkpoint.pt")


# ---------------------------------------------------------------- 2. from_pretrained samples what from_run does


@pytest.mark.parametrize("prior", ["learned", "marginal", "uniform"])
@pytest.mark.parametrize("options", [{}, {"temperature": 0.8, "top_k": 5, "top_p": 0.9}])
def test_from_pretrained_samples_exactly_what_from_run_samples(finished, saved, prior, options):
    original = VQPriorPipeline.from_run(finished, device="cpu")
    loaded = VQPriorPipeline.from_pretrained(saved, device="cpu")
    a = original(n=8, prior=prior, seed=3, **options)
    b = loaded(n=8, prior=prior, seed=3, **options)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (8, 1, 28, 28)
    assert not torch.equal(a.codes, original(n=8, prior=prior, seed=4, **options).codes)  # the seed matters


def test_from_pretrained_restores_the_pipeline_attributes(finished, saved):
    original = VQPriorPipeline.from_run(finished, device="cpu")
    loaded = VQPriorPipeline.from_pretrained(saved, device="cpu")
    assert loaded.grid == original.grid == (7, 7)
    assert loaded.num_embeddings == original.num_embeddings and loaded.num_classes == original.num_classes
    assert loaded.class_names == FASHION_NAMES
    assert loaded.stage1_checkpoint_sha256 == original.stage1_checkpoint_sha256
    codes = original.sample_codes(4, seed=0)
    assert torch.equal(original.decode(codes), loaded.decode(codes))


# ---------------------------------------------------------------- 3. pipeline export and damaged folders


def test_pipeline_export_writes_a_loadable_pipeline_and_refuses_to_overwrite(finished, saved, cli, tmp_path):
    out = tmp_path / "exported"
    result = cli("pipeline", "export", "--run", str(finished), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads((out / "pipeline.json").read_text()) == json.loads((saved / "pipeline.json").read_text())
    for name in ("vqvae.safetensors", "prior.safetensors"):
        assert (out / name).read_bytes() == (saved / name).read_bytes()

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    line = one_line_error(cli("pipeline", "export", "--run", str(finished), "--out", str(out)))
    assert "--force" in line
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    forced = cli("pipeline", "export", "--run", str(finished), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert {p.name for p in out.iterdir()} == FILES


def test_export_to_a_file_is_refused(finished, cli, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    one_line_error(cli("pipeline", "export", "--run", str(finished), "--out", str(target)))
    assert target.read_text() == "keep me"


def test_export_from_a_missing_run_is_refused_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "out"
    line = one_line_error(cli("pipeline", "export", "--run", str(tmp_path / "nosuch"), "--out", str(out)))
    assert "nosuch" in line
    assert not out.exists()


def test_export_into_a_run_directory_is_refused(finished, cli, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    one_line_error(cli("pipeline", "export", "--run", str(run), "--out", str(run), "--force"))
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def damaged_copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "pipe"
    shutil.copytree(saved, copy)
    return copy


def test_from_pretrained_refuses_truncated_json(saved, tmp_path):
    pipe = damaged_copy(saved, tmp_path)
    text = (pipe / "pipeline.json").read_text()
    (pipe / "pipeline.json").write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match="pipeline.json"):
        VQPriorPipeline.from_pretrained(pipe, device="cpu")


@pytest.mark.parametrize("key", ["vqvae_config", "marginal_log_probs", "grid", "stage1_checkpoint_sha256"])
def test_from_pretrained_refuses_json_missing_a_key(saved, tmp_path, key):
    pipe = damaged_copy(saved, tmp_path)
    meta = json.loads((pipe / "pipeline.json").read_text())
    del meta[key]
    (pipe / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=key):
        VQPriorPipeline.from_pretrained(pipe, device="cpu")


@pytest.mark.parametrize("damage", ["not-a-mapping", "bad-model-config", "missing-weights", "truncated-weights",
                                    "missing-folder"])
def test_from_pretrained_refuses_other_damage_with_a_user_error(saved, tmp_path, damage):
    pipe = damaged_copy(saved, tmp_path)
    meta_path = pipe / "pipeline.json"
    if damage == "not-a-mapping":
        meta_path.write_text("[1, 2, 3]")
    elif damage == "bad-model-config":
        meta = json.loads(meta_path.read_text())
        meta["prior_config"]["kernel_size"] = 4
        meta_path.write_text(json.dumps(meta))
    elif damage == "missing-weights":
        (pipe / "prior.safetensors").unlink()
    elif damage == "truncated-weights":
        data = (pipe / "vqvae.safetensors").read_bytes()
        (pipe / "vqvae.safetensors").write_bytes(data[: len(data) // 2])
    else:
        pipe = tmp_path / "nosuch"
    with pytest.raises(UserError):
        VQPriorPipeline.from_pretrained(pipe, device="cpu")


# ---------------------------------------------------------------- 4. a transformer prior goes the same way


def test_a_transformer_pipeline_exports_loads_and_samples_the_same_codes(tiny_run, tmp_path):
    settings = [*TINY_PRIOR, "stage2.architecture=transformer", "stage2.heads=2", "stage2.conditional=true"]
    trained = run_cli("stage2_prior", "train", "--run", str(tiny_run), *[a for s in settings for a in ("--set", s)])
    assert trained.returncode == 0, trained.stderr
    exported = run_cli("pipeline", "export", "--run", str(tiny_run), "--out", str(tmp_path / "pipe"))
    assert exported.returncode == 0, exported.stderr
    meta = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())
    assert meta["prior_architecture"] == "transformer" and meta["prior_config"]["heads"] == 2
    original = VQPriorPipeline.from_run(tiny_run, device="cpu")
    loaded = VQPriorPipeline.from_pretrained(tmp_path / "pipe", device="cpu")
    assert type(loaded.priors["learned"]).__name__ == "CodeTransformer" and loaded.num_classes == 10
    a = original(n=6, seed=2, labels=4, temperature=0.9, top_k=7)
    b = loaded(n=6, seed=2, labels=4, temperature=0.9, top_k=7)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.images, b.images)
    sampled = run_cli("pipeline", "sample", "--run", str(tiny_run), "--label", "4", "--n", "4",
                      "--out", str(tmp_path / "s.png"))
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "s.png").is_file()
