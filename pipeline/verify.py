"""``vqprior verify``: check every file of a run or a saved pipeline against the checksum it carries.

Checked: the checkpoints (stage 1, stage 2, the feature classifier), the code files, and a saved
pipeline's weights and ``pipeline.json`` (``data.integrity``). The other files of a run hold numbers
derived from these and are made again when stale; they carry no checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

from data.checkpoint import KINDS, load_checkpoint
from data.codes import read_code_info
from data.errors import UserError
from data.rundir import RunPaths

from .pipeline import read_pretrained_json, read_weights

Check = tuple[str, str, Path, Callable[[Path], object]]  # (name, what it is, path, the load that checks it)


def run_checks(run_dir: Union[str, Path]) -> list[Check]:
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        raise UserError(f"run directory not found: {paths.root}")
    checkpoints = [(paths.stage1_checkpoint, "stage1"), (paths.stage2_checkpoint, "stage2"),
                   (paths.classifier_checkpoint, "classifier")]
    checks = [(paths.name(p), KINDS[kind][0], p, lambda p, kind=kind: load_checkpoint(p, kind))
              for p, kind in checkpoints]
    return checks + [(paths.name(paths.codes(split)), "code file", paths.codes(split), read_code_info)
                     for split in ("train", "val")]


def pretrained_checks(folder: Union[str, Path]) -> list[Check]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"saved pipeline not found: {folder}")
    return [("pipeline.json", "pipeline description", folder / "pipeline.json", read_pretrained_json),
            *((f"{name}.safetensors", f"{name} weights", folder / f"{name}.safetensors", read_weights)
              for name in ("vqvae", "prior"))]


def verify(checks: list[Check], say=print) -> list[str]:
    """Run each check, printing ``ok``, ``absent`` or ``BAD`` and why, one line per file; the bad files' names."""
    bad = []
    for name, what, path, load in checks:
        if not path.is_file():
            say(f"absent  {name}  ({what})")
            continue
        try:
            load(path)
        except UserError as exc:
            bad.append(name)
            say(f"BAD     {name}  ({what}): {exc.problem}")
            continue
        say(f"ok      {name}  ({what})")
    return bad
