"""Where the ``sample`` command writes, and how: its output policy, apart from its arguments.

A grid picture (at most ``MAX_GRID`` images), a folder of one PNG per image, an HDF5 code file.
An existing file is replaced only when asked (``--force``) and a run's own files never are: new
names in its samples folder, or outside the run, are the only outputs. Batches stream to the
folder and the code file as they are drawn, so memory stays bounded whatever ``--n`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from data.errors import UserError
from data.rundir import RunPaths
from stage2_prior import PRIORS

MAX_GRID = 1024  # images in one grid picture: more are written one per file (--images-dir)


class SampleOutputs:
    """Where ``pipeline sample`` writes: the grid (when n fits one), a folder of images, a code file."""

    def __init__(self, grid: Optional[Path], images_dir: Optional[Path], codes: Optional[Path]):
        self.grid, self.images_dir, self.codes = grid, images_dir, codes
        self.pending: list = []  # images for the grid, kept until the last batch

    def describe(self, n: int) -> list[str]:
        return [what for what, on in ((f"the grid {self.grid}", self.grid), (f"{n} images to {self.images_dir}",
                self.images_dir), (f"{n} code grids to {self.codes}", self.codes)) if on]


def check_outputs(run_dir: Path, n: int, grid_path: Path, args) -> SampleOutputs:
    """Refuse outputs that would overwrite a file (without --force) or any of the run's own files."""
    from data.io import check_output_path

    grid = grid_path if n <= MAX_GRID or args.out else None
    if args.out and n > MAX_GRID:
        raise UserError(f"--n {n} is too many for one grid picture (at most {MAX_GRID}); "
                        "write them one per file with --images-dir, or as codes with --codes")
    if args.out is not None and not args.out.lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args.out}")
    if args.codes is not None and not args.codes.lower().endswith(".h5"):
        raise UserError(f"--codes must name a .h5 file, got {args.codes}")
    images_dir = Path(args.images_dir) if args.images_dir else None
    codes = Path(args.codes) if args.codes else None
    if grid is None and images_dir is None and codes is None:
        raise UserError(f"--n {n} is too many for one grid picture (at most {MAX_GRID}); "
                        "write them one per file with --images-dir, or as codes with --codes")
    for path in (p for p in (grid, codes) if p is not None):
        check_output_path(path)
        refuse_run_file(run_dir, path)
        if path.exists() and not args.force:
            raise UserError(f"{path} already exists; pass --force to replace it, or choose another name")
    if images_dir is not None:
        if images_dir.exists() and not images_dir.is_dir():
            raise UserError(f"--images-dir {images_dir} is a file; give a folder")
        refuse_run_file(run_dir, images_dir / "x.png")
        if images_dir.is_dir() and any(images_dir.glob(f"{args.prior}_seed*.png")) and not args.force:
            raise UserError(f"{images_dir} already holds sampled images; pass --force to replace them, "
                            "or choose another folder")
    return SampleOutputs(grid, images_dir, codes)


def refuse_run_file(run_dir: Path, path: Path) -> None:
    """The run's own files are never an output of ``sample``: only new names in its samples folder are."""
    paths = RunPaths(run_dir.resolve())
    target = path.resolve()
    if target == paths.root or paths.root not in target.parents:
        return
    inside = target.relative_to(paths.root)
    in_samples = paths.samples in target.parents
    if not in_samples or paths.is_own_sample_grid(inside, PRIORS):
        raise UserError(f"{path} is part of the run in {run_dir} and is never overwritten by `sample`; "
                        "choose a name outside the run, or a new one under its samples/ folder")


def stream_samples(batches, writer, outputs: SampleOutputs, args, seed: int) -> None:
    """Stream each batch to the code file and the image folder; the grid is written at the end."""
    from data.datasets import save_image_grid, to_unit_range
    from data.io import atomic_path

    from .run import grid_columns

    done = 0
    for batch in batches:
        if writer is not None:
            writer.append(batch.codes, batch.labels)
        if outputs.images_dir is not None:
            from torchvision.utils import save_image

            for i, image in enumerate(batch.images, start=done):
                with atomic_path(outputs.images_dir / f"{args.prior}_seed{seed}_{i:06d}.png") as tmp:
                    save_image(to_unit_range(image), tmp, format="png")
        if outputs.grid is not None:
            outputs.pending.append(batch.images)
        done += len(batch.codes)
    if outputs.grid is not None:
        save_image_grid(torch.cat(outputs.pending), outputs.grid, nrow=grid_columns(done))
