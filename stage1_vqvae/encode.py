"""Encode a dataset split into an HDF5 file of code grids with a trained VQ-VAE.

Runs the model in eval mode (no EMA or dead-code updates), batch by batch on the
accelerator when there is one, appending each batch to the file as it goes: peak memory
is one batch, whatever the number of images. The file is written under a temporary name
and renamed into place only when complete (``data.codes.CodeWriter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import torch
from tqdm import tqdm

from data import CodeWriter, load_config, load_split, read_code_info, to_model_range
from data.errors import UserError
from data.io import sha256_file
from data.rundir import RunPaths
from data.training import make_accelerator

from .model import VQVAE

SPLITS = ("train", "val")


def encode_batches(model: VQVAE, batches: Iterable[tuple[torch.Tensor, Optional[torch.Tensor]]], path: Path, *,
                   grid: tuple[int, int], dataset: str, split: str, checkpoint_sha256: str, has_labels: bool,
                   device: torch.device, total: Optional[int] = None) -> int:
    """Stream (uint8 images, labels) batches through ``model.encode`` into ``path``; returns N."""
    model.eval()
    with CodeWriter(path, num_embeddings=model.num_embeddings, embedding_dim=model.quantizer.embedding_dim,
                    grid=grid, dataset=dataset, split=split, stage1_checkpoint_sha256=checkpoint_sha256,
                    has_labels=has_labels) as writer:
        for images, labels in tqdm(batches, total=total, desc=f"encode {split}", unit="batch", leave=False):
            writer.append(model.encode(to_model_range(images.to(device, non_blocking=True))), labels)
        return writer.count


def encode_run(run_dir: Path, split: str = "all", force: bool = False, batch_size: int = 1000) -> list[Path]:
    """Write ``run_dir/codes/{split}.h5`` for the requested splits; skip files already up to date.

    A file is up to date when it was encoded from this stage-1 checkpoint, for this split, and
    holds one grid per image of the split; anything else is re-encoded.
    """
    paths = RunPaths(run_dir)
    if not paths.config.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); train stage 1 first")
    config = load_config(paths.config)
    device = make_accelerator("no", config.run.device).device
    model = VQVAE.from_checkpoint(paths.stage1_checkpoint, map_location=device)
    sha = sha256_file(paths.stage1_checkpoint)
    written = []
    for name in SPLITS if split == "all" else (split,):
        path = paths.codes(name)
        data = load_split(config.data, name)
        stale = None if force or not path.exists() else why_stale(path, sha, name, len(data))
        if path.exists() and not force and stale is None:
            print(f"{path} is up to date ({len(data)} grids); --force re-encodes")
            written.append(path)
            continue
        if stale:
            print(f"{path}: {stale}; encoding again")
        grid = model.grid_size(tuple(data.images.shape[-2:]))
        label_batches = data.labels.split(batch_size) if data.labels is not None else [None] * len(data)
        batches = zip(data.images.split(batch_size), label_batches)
        n = encode_batches(model, batches, path, grid=grid, dataset=config.data.dataset, split=name,
                           checkpoint_sha256=sha, has_labels=data.labels is not None, device=device,
                           total=-(-len(data) // batch_size))
        print(f"wrote {path}: {n} grids of {grid[0]}x{grid[1]} codes")
        written.append(path)
    return written


def why_stale(path: Path, sha: str, split: str, num_images: int) -> str | None:
    """Why an existing code file does not match this checkpoint and split (None: it does)."""
    try:
        info = read_code_info(path)
    except UserError as exc:
        return str(exc).split(";")[0]
    if info.stage1_checkpoint_sha256 != sha:
        return "encoded with another stage-1 checkpoint"
    if info.split != split or info.num_codes != num_images:
        return f"holds {info.num_codes} grids of split '{info.split}', not the {num_images} images of '{split}'"
    return None
