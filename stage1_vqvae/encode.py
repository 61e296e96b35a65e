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
    """Write ``run_dir/codes/{split}.h5`` for the requested splits; skip files already up to date."""
    ckpt = run_dir / "stage1" / "checkpoint.pt"
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); train stage 1 first")
    config = load_config(run_dir / "config.yaml")
    device = make_accelerator("no", config.run.device).device
    model = VQVAE.from_checkpoint(ckpt, map_location=device)
    sha = sha256_file(ckpt)
    written = []
    for name in SPLITS if split == "all" else (split,):
        path = run_dir / "codes" / f"{name}.h5"
        if path.exists() and not force:
            info = read_code_info(path)
            if info.stage1_checkpoint_sha256 != sha:
                raise UserError(f"{path} was encoded with another stage-1 checkpoint; pass --force to re-encode")
            print(f"{path} is up to date ({info.num_codes} grids); --force re-encodes")
            written.append(path)
            continue
        data = load_split(config.data, name)
        grid = model.grid_size(tuple(data.images.shape[-2:]))
        label_batches = data.labels.split(batch_size) if data.labels is not None else [None] * len(data)
        batches = zip(data.images.split(batch_size), label_batches)
        n = encode_batches(model, batches, path, grid=grid, dataset=config.data.dataset, split=name,
                           checkpoint_sha256=sha, has_labels=data.labels is not None, device=device,
                           total=-(-len(data) // batch_size))
        print(f"wrote {path}: {n} grids of {grid[0]}x{grid[1]} codes")
        written.append(path)
    return written
