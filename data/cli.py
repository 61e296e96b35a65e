"""Shared command-line plumbing: one-line errors with exit code 2, and ``--set KEY=VALUE``."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable

from .errors import UserError


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


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run ``main`` and exit: 0 on success, 2 with one ``error:`` line on a UserError.

    SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's time limit) stop the command the same
    way: temporary files are removed, complete files and checkpoints are kept, exit 130 / 143.
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"error: {what}; completed checkpoints are kept, continue with --resume", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code or 0)
