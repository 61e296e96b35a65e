"""Encode a dataset split into an HDF5 file of code grids with a trained VQ-VAE.

Runs the model in eval mode (no EMA or dead-code updates), batch by batch on the
accelerator when there is one, appending each batch to the file as it goes: peak memory
is one batch, whatever the number of images. The file is written under a temporary name
and renamed into place only when complete (``data.codes.CodeWriter``).

Beside each val grid the file stores the image's distortion, -log2 p(x | z_q(x)) in bits under
the decoder's discretised likelihood (``VQVAE.distortion_bits``). That is how bits per dimension
cross the stage boundary: stage 2 adds its prior's code length to it without loading stage 1.
(Only the val split, which bits per dimension is reported on: for the training split it would
add a full decoder pass and likelihood per image to every encode.)
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterable, Optional

import torch
from tqdm import tqdm

from data import CodeWriter, Config, load_split, to_model_range
from data.provenance import file_hash, fingerprint, stale_reason
from data.rundir import RunPaths, run_config
from data.training import make_accelerator, process_count, process_rank

from .model import VQVAE

SPLITS = ("train", "val")
DISTORTION_SPLITS = ("val",)  # splits whose code files carry each image's distortion bits


def encode_batches(model: VQVAE, batches: Iterable[tuple[torch.Tensor, Optional[torch.Tensor]]], path: Path, *,
                   grid: tuple[int, int], dataset: str, split: str, checkpoint_sha256: str, has_labels: bool,
                   device: torch.device, total: Optional[int] = None, distortion_dims: Optional[int] = None,
                   computed_from: Optional[dict] = None) -> int:
    """Stream (uint8 images, labels) batches through ``model.encode`` into ``path``; returns N.

    With ``distortion_dims`` (C*H*W) each image's distortion bits are stored beside its grid.
    Under several processes (``accelerate launch``) every process runs through the same batches
    and encodes its share of each (rows rank, rank + world, ...); the main process gathers the
    shares back into order and alone writes the one file.
    """
    model.eval()
    rank, world = process_rank(), process_count()
    writer = CodeWriter(path, num_embeddings=model.num_embeddings, embedding_dim=model.quantizer.embedding_dim,
                        grid=grid, dataset=dataset, split=split, stage1_checkpoint_sha256=checkpoint_sha256,
                        has_labels=has_labels, distortion_dims=distortion_dims,
                        distortion_likelihood=model.likelihood, computed_from=computed_from) if rank == 0 else None
    with writer or contextlib.nullcontext():
        for images, labels in tqdm(batches, total=total, desc=f"encode {split}", unit="batch", leave=False,
                                   disable=rank != 0):
            x = to_model_range(images[rank::world].to(device, non_blocking=True))
            codes = model.encode(x)
            bits = model.distortion_bits(x, codes) if distortion_dims else None
            if world > 1:
                codes, bits = gather_shares(codes, bits, len(images), world)
            if writer is not None:
                writer.append(codes, labels, bits)
        return writer.count if writer is not None else 0


def gather_shares(codes: torch.Tensor, bits: Optional[torch.Tensor], n: int, world: int):
    """Every process's share of a batch of ``n`` (rows r, r + world, ...) back in row order, on every process."""
    import torch.distributed as dist

    size = -(-n // world)  # shares padded to one size for all_gather

    def gather(part: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros(size, *part.shape[1:], dtype=part.dtype, device=part.device)
        padded[:len(part)] = part
        shares = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(shares, padded)
        out = torch.empty(n, *part.shape[1:], dtype=part.dtype, device=part.device)
        for r, share in enumerate(shares):
            out[r::world] = share[:len(range(r, n, world))]
        return out

    return gather(codes), (gather(bits) if bits is not None else None)


def encode_run(run_dir: Path, config: Optional[Config] = None, split: str = "all", force: bool = False,
               batch_size: int = 1000) -> list[Path]:
    """Write the run's code file of each requested split; skip files already up to date.

    A file is up to date when the fingerprint it records (``code_sources``, ``data.provenance``)
    is the current one: encoded from this stage-1 checkpoint, for this split, one grid per image,
    with distortion bits where they can be measured. Anything else, and everything with
    ``force``, is encoded again. ``config`` is the run's (its saved one when not given).
    """
    paths = RunPaths(run_dir)
    config = config or run_config(paths)
    device = make_accelerator("no", config.run.device).device
    model = VQVAE.from_checkpoint(paths.stage1_checkpoint, map_location=device)
    sha = file_hash(paths.stage1_checkpoint)  # hashed once: the fingerprints below reuse it
    say = print if process_rank() == 0 else (lambda *_: None)
    written = []
    for name in SPLITS if split == "all" else (split,):
        path = paths.codes(name)
        data = load_split(config.data, name)
        distortion = model.can_measure_distortion and name in DISTORTION_SPLITS
        sources = code_sources(paths, name, len(data), distortion)
        stale = stale_reason(path, sources)
        if stale is None and not force:
            say(f"{path} is up to date ({len(data)} grids)")
            written.append(path)
            continue
        if stale is not None and path.exists():
            say(f"{path}: {stale}; encoding again")
        grid = model.grid_size(tuple(data.images.shape[-2:]))
        label_batches = data.labels.split(batch_size) if data.labels is not None else [None] * len(data)
        batches = zip(data.images.split(batch_size), label_batches)
        dims = math.prod(data.images.shape[1:]) if distortion else None
        n = encode_batches(model, batches, path, grid=grid, dataset=config.data.dataset, split=name,
                           checkpoint_sha256=sha, has_labels=data.labels is not None, device=device,
                           total=-(-len(data) // batch_size), distortion_dims=dims, computed_from=sources)
        say(f"wrote {path}: {n} grids of {grid[0]}x{grid[1]} codes")
        written.append(path)
    return written


def code_sources(paths: RunPaths, split: str, num_images: int, distortion: bool) -> dict:
    """What a code file is computed from: the stage-1 checkpoint, the split and its size, and whether
    it carries each image's distortion bits."""
    return fingerprint(paths, [paths.stage1_checkpoint], {"split": split, "images": num_images,
                                                          "distortion": distortion})
