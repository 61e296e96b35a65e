"""Checksums (``data.integrity``): every file the tool writes and reads back carries the digest of its
content, and a load of a damaged file is a one-line error naming it, never a silent load of other content
and never "changed, so recompute"."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from data import folder_store, integrity, load_config, load_split
from data.checkpoint import load_checkpoint, save_checkpoint
from data.codes import load_codes, load_distortion
from data.errors import UserError
from pipeline import VQPriorPipeline
from tests.helpers import one_line_error, private_copy, stripes, write_codes

FLIPS = 400  # sampled offsets per file; every region of the small files below is hit many times


def flipped(raw: bytes, offset: int) -> bytes:
    damaged = bytearray(raw)
    damaged[offset] ^= 0x5A
    return bytes(damaged)


def flip_outcomes(path: Path, read, offsets) -> dict:
    """Flip one byte at each offset in turn and read the file: ``error`` (a UserError), ``same`` (the read
    content equals the original's) or ``silent`` (other content, no error: what must never happen)."""
    raw, reference = path.read_bytes(), integrity.content_digest(read(path))
    outcomes = {"error": 0, "same": 0, "silent": []}
    for offset in offsets:
        path.write_bytes(flipped(raw, offset))
        try:
            same = integrity.content_digest(read(path)) == reference
        except UserError:
            outcomes["error"] += 1
            continue
        outcomes["same"] += 1 if same else 0
        if not same:
            outcomes["silent"].append(offset)
    path.write_bytes(raw)
    return outcomes


def sampled(size: int, seed: int = 0) -> list[int]:
    return random.Random(seed).sample(range(size), min(size, FLIPS))


# ---------------------------------------------------------------- the digest


def test_the_digest_covers_every_value_dtype_and_shape_but_not_dict_order():
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}, "step": 3, "names": ["a", "b"]}
    digest = integrity.content_digest(state)
    assert integrity.content_digest({"step": 3, "names": ["a", "b"], "model": {"b": torch.zeros(3),
                                                                               "w": torch.arange(6.0).view(2, 3)}}) \
        == digest
    changed = [{**state, "step": 4}, {**state, "names": ["a", "c"]},
               {**state, "model": {**state["model"], "w": torch.arange(6.0).reshape(3, 2)}},
               {**state, "model": {**state["model"], "w": torch.arange(6.0, dtype=torch.float64).reshape(2, 3)}},
               {**state, "model": {**state["model"], "b": torch.tensor([0.0, 0.0, 1e-30])}}]
    assert len({integrity.content_digest(c) for c in changed} | {digest}) == len(changed) + 1
    assert integrity.intact(integrity.seal(state)) and not integrity.intact({**integrity.seal(state), "step": 4})


# ---------------------------------------------------------------- each file kind, flipped byte by byte


def test_every_flipped_byte_of_a_checkpoint_is_an_error_or_changes_nothing(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = torch.nn.Linear(8, 16)
    save_checkpoint(path, "stage2", model=model.state_dict(), model_config={"hidden": 8}, step=3)
    outcomes = flip_outcomes(path, lambda p: load_checkpoint(p, "stage2"), sampled(path.stat().st_size))
    assert outcomes["silent"] == [] and outcomes["error"] > FLIPS // 2, outcomes
    # every byte of the weights themselves: always an error
    weights_at = path.read_bytes().find(model.weight.detach().numpy().tobytes())
    span = range(weights_at, weights_at + model.weight.numel() * 4)
    assert flip_outcomes(path, lambda p: load_checkpoint(p, "stage2"), span)["error"] == len(span)


def test_every_flipped_byte_of_a_code_file_is_an_error(tmp_path):
    path = tmp_path / "train.h5"
    codes, labels = stripes(64)
    write_codes(path, codes, labels)

    def read(p):
        return load_codes(p)[:2], load_distortion(p)

    outcomes = flip_outcomes(path, read, sampled(path.stat().st_size) + list(range(0, 512, 7)))
    assert outcomes["error"] == FLIPS + len(range(0, 512, 7)), outcomes
    message = None
    try:
        path.write_bytes(flipped(path.read_bytes(), path.stat().st_size - 1))
        load_codes(path)
    except UserError as exc:
        message = str(exc)
    assert message and "code file" in message and "is damaged" in message and str(path) in message


@pytest.fixture(scope="module")
def exported(fast_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "pipe"
    VQPriorPipeline.from_run(fast_run, device="cpu").save_pretrained(out)
    return out


def pipeline_content(folder: Path):
    pipe = VQPriorPipeline.from_pretrained(folder, device="cpu")
    return ({k: v for k, v in pipe.vqvae.state_dict().items()}, pipe.priors["learned"].state_dict(),
            pipe.priors["marginal"].log_probs, list(pipe.grid), pipe.class_names)


@pytest.mark.parametrize("name", ["prior.safetensors", "vqvae.safetensors", "pipeline.json"])
def test_every_flipped_byte_of_an_exported_pipeline_is_an_error_or_changes_nothing(exported, tmp_path, name):
    folder = private_copy(exported, tmp_path)
    path = folder / name
    outcomes = flip_outcomes(path, lambda p: pipeline_content(p.parent), sampled(path.stat().st_size))
    assert outcomes["silent"] == [] and outcomes["error"] > FLIPS * 3 // 4, outcomes


def test_a_damaged_image_store_is_an_error_naming_it(tmp_path):
    from PIL import Image

    (tmp_path / "images" / "a").mkdir(parents=True)
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(tmp_path / "images" / "a" / f"{i}.png")
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path / 'images'}", "data.image_size=8",
                             f"data.cache_dir={tmp_path / 'cache'}", "data.workers=1"]).data
    load_split(cfg, "train")
    (store,) = (tmp_path / "cache" / "folders").iterdir()
    for name in ("images.u8", "labels.i64", "index.json"):
        raw = (store / name).read_bytes()
        (store / name).write_bytes(flipped(raw, len(raw) // 2))
        with pytest.raises(UserError, match="the image store .* is damaged.*delete it to decode the folder again"):
            folder_store.open_store(tmp_path / "images", 8, None, cache_dir=str(tmp_path / "cache"))
        (store / name).write_bytes(raw)
    assert load_split(cfg, "train").images.shape[0] == 5


# ---------------------------------------------------------------- damage in a run: refused, never recomputed


def damage(path: Path) -> None:
    """Flip a byte in the middle of the file's largest stretch of weights (its data, not its headers)."""
    raw = path.read_bytes()
    path.write_bytes(flipped(raw, len(raw) // 2))


def test_a_damaged_stage2_checkpoint_is_refused_by_sample_and_resume_never_recomputed(fast_run, tmp_path, cli):
    run = private_copy(fast_run, tmp_path)
    before = json.loads((run / "stage2" / "bits_per_code.json").read_text())
    damage(run / "stage2" / "checkpoint.pt")
    for args in (("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "s.png")),
                 ("pipeline", "run", "--run", str(run), "--resume")):
        line = one_line_error(cli(*args), "stage-2 checkpoint", "is damaged", "stage2/checkpoint.pt")
        assert "changed" not in line
    assert json.loads((run / "stage2" / "bits_per_code.json").read_text()) == before


def test_a_damaged_stage1_checkpoint_is_named_not_blamed_on_the_prior(fast_run, tmp_path, cli):
    run = private_copy(fast_run, tmp_path)
    damage(run / "stage1" / "checkpoint.pt")
    line = one_line_error(cli("pipeline", "sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "s.png")),
                          "stage-1 checkpoint", "is damaged")
    assert "different stage-1 checkpoint" not in line and "retrain" not in line


# ---------------------------------------------------------------- vqprior verify


def test_verify_prints_a_line_per_file_of_a_run_and_exits_2_naming_the_damaged_one(fast_run, tmp_path, cli):
    run = private_copy(fast_run, tmp_path)
    result = cli("pipeline", "verify", "--run", str(run))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "stage1/checkpoint.pt"], ["ok", "stage2/checkpoint.pt"], ["ok", "classifier/checkpoint.pt"],
        ["ok", "codes/train.h5"], ["ok", "codes/val.h5"]]
    damage(run / "codes" / "val.h5")
    (run / "classifier" / "checkpoint.pt").unlink()
    result = cli("pipeline", "verify", "--run", str(run))
    one_line_error(result, "1 of 5 files are damaged or unreadable: codes/val.h5")
    assert "absent  classifier/checkpoint.pt" in result.stdout
    assert "BAD     codes/val.h5  (code file): code file" in result.stdout and "is damaged" in result.stdout


def test_verify_checks_a_saved_pipeline(exported, tmp_path, cli):
    folder = private_copy(exported, tmp_path)
    assert cli("pipeline", "verify", "--pretrained", str(folder)).returncode == 0
    damage(folder / "prior.safetensors")
    result = cli("pipeline", "verify", "--pretrained", str(folder))
    one_line_error(result, "1 of 3 files are damaged or unreadable: prior.safetensors")
    assert "export the pipeline again" in result.stdout

