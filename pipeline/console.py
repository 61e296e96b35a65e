"""The console command ``vqprior``: every command of the three packages under one name.

    vqprior run | sample | report | export | fid | compare | verify   (= python -m pipeline ...)
    vqprior stage1 train | encode                    (= python -m stage1_vqvae ...)
    vqprior stage2 train | evaluate                  (= python -m stage2_prior ...)

``pip`` installs it as a script, and a script does not put the working folder on Python's path
(``python -m`` does), so it works from any folder, including one that holds a ``data.py``,
``data/`` or ``pipeline.py`` of the user's own.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

from data.cli import run_main

PIPELINE_COMMANDS = ("run", "sample", "report", "export", "fid", "compare", "verify")
STAGES = {"stage1": "stage1_vqvae", "stage2": "stage2_prior"}
USAGE = """usage: vqprior COMMAND ...

commands:
  run              train both stages, sample, and write the prior study report (the main job)
  sample           sample new images from a trained run
  report           (re)write a run's report
  export           save a trained run's pipeline for sharing (safetensors + JSON)
  fid              Inception FID of a trained run's samples (needs the fid extra)
  compare          put finished runs side by side: one HTML page and a Markdown table
  verify           check a run's or a saved pipeline's files against their checksums
  stage1 train     train the VQ-VAE of a run
  stage1 encode    write a run's code files with its VQ-VAE
  stage2 train     train the prior of a run
  stage2 evaluate  bits per code of the learned, marginal and uniform priors

`vqprior COMMAND --help` describes each command's options."""


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] in STAGES:
        module, prog, argv = f"{STAGES[argv[0]]}.__main__", f"vqprior {argv[0]}", argv[1:]
    elif argv[0] in PIPELINE_COMMANDS:
        module, prog = "pipeline.__main__", "vqprior"
    else:
        choices = ", ".join([*PIPELINE_COMMANDS, *STAGES])
        print(f"error: unknown command '{argv[0]}' (choose from {choices}; see vqprior --help)", file=sys.stderr)
        sys.exit(2)
    entry = importlib.import_module(module).main
    run_main(lambda args: entry(args, prog=prog), argv, console=True)


if __name__ == "__main__":
    main()
