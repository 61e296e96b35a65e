"""Shared command-line plumbing: one-line errors with exit code 2, ``--set KEY=VALUE``, and the
wording of each fix as the command a user types.

The same commands have two entry points: the console command (``vqprior stage1 train ...``)
and the modules (``python -m stage1_vqvae train ...``). A ``UserError`` from the library names
the workflow step that would fix it (``data.errors.Fix``); ``render`` words that step as the
command of the entry point the user called, with the run directory filled in, and names flags
where the library names arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable, Optional

from .errors import BadValue, Fix, UserError

# The command of each fix, in the console command's words; {run} is the run directory.
COMMANDS = {
    Fix.TRAIN_STAGE1: "vqprior stage1 train --config FILE --run {run}",
    Fix.ENCODE: "vqprior stage1 encode --run {run}",
    Fix.ENCODE_AGAIN: "vqprior stage1 encode --run {run} --force",
    Fix.TRAIN_STAGE2: "vqprior stage2 train --run {run}",
    Fix.EVALUATE: "vqprior stage2 evaluate --run {run}",
    Fix.RUN: "vqprior run --run {run}",
    Fix.RESUME: "vqprior run --run {run} --resume",
    Fix.EXPORT: "vqprior export --run {run} --out DIR2",
    Fix.FID: "vqprior fid --run {run}",
}
# Fixes that are a flag of the command just typed rather than another command.
FLAG_FIXES = {Fix.NEW_RUN: "choose a new --run",
              Fix.RESUME_OR_NEW_RUN: "pass --resume to continue it, or choose a new --run"}
# The console command's first words -> the same command through ``python -m``.
MODULE_WORDS = (("vqprior stage1 ", "python -m stage1_vqvae "), ("vqprior stage2 ", "python -m stage2_prior "),
                ("vqprior ", "python -m pipeline "))
# The library's argument names -> the flags that set them.
FLAGS = {"n": "--n", "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed",
         "labels": "--label", "batch_size": "--batch-size", "override": "--set", "out": "--out", "prior": "--prior",
         "method": "--method"}


def command_for(fix: Fix, run=None, console: bool = False) -> Optional[str]:
    """The command that performs ``fix``, as typed through the console command or ``python -m``."""
    template = COMMANDS.get(fix)
    if template is None:
        return None
    command = template.format(run=run if run is not None else "DIR")
    if not console:
        for console_words, module_words in MODULE_WORDS:
            if command.startswith(console_words):
                return module_words + command.removeprefix(console_words)
    return command


def render(error: UserError, console: bool = False) -> str:
    """The one line a command prints for ``error``: its words, the fix as a command or a flag."""
    if isinstance(error, BadValue):
        return "; ".join(part for part in (error.worded(FLAGS.get(error.name, error.name)), error.advice,
                                           error.fix and error.fix.value) if part)
    if error.fix in FLAG_FIXES:
        return error.sentence(FLAG_FIXES[error.fix])
    command = command_for(error.fix, error.run, console) if error.fix else None
    return error.sentence(f"{error.fix.value}: `{command}`" if command else None)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line and exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_config_arguments(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    parser.add_argument("--config", required=config_required, metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, dotted (e.g. --set stage1.steps=200); repeatable",
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` runs: temporary files are removed."""


def _terminate(signum, frame):
    raise Terminated()


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None,
             console: bool = False) -> None:
    """Run ``main`` and exit: 0 on success, 2 with one ``error:`` line on a UserError.

    SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's time limit) stop the command the same
    way: temporary files are removed, complete files and checkpoints are kept, exit 130 / 143.
    ``console``: the user typed the console command, so fixes are worded as ``vqprior ...``.
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {render(exc, console)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {what}; completed checkpoints are kept, continue with --resume", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code or 0)
