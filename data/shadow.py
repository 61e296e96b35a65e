"""Refuse a module of the working folder that stands in for one of this project's packages.

``python -m pipeline`` puts the working folder first on ``sys.path``, and the packages have
plain names: from a folder holding a ``data.py`` (or ``data/__init__.py``, or a ``data/`` folder
of images that Python takes for a namespace package) Python would import that instead of ours
and fail deep inside with a confusing traceback, or run the user's file. Each package checks the
packages it needs *before* importing them, by finding their specs without running anything, and
stops with one line that names the file and the way out. The ``vqprior`` console command never
puts the working folder on the path, so it never meets this.

This module imports nothing of the project, so that it runs before ``data`` is importable: the
packages load it by its file path (see ``stage1_vqvae/__init__.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

HOME = Path(__file__).resolve().parent.parent  # the folder that holds this project's packages


def _locations(name: str) -> list[Path]:
    """Where package ``name`` would be imported from: its file, or a namespace package's folders."""
    module = sys.modules.get(name)
    if module is not None:
        origin = getattr(module, "__file__", None)
        return [Path(origin)] if origin else [Path(p) for p in getattr(module, "__path__", [])]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.origin and spec.has_location:
        return [Path(spec.origin)]
    return [Path(p) for p in (spec.submodule_search_locations or [])]  # a namespace package


def _package_folder(location: Path) -> Path:
    """The folder that holds the package or module at ``location``."""
    location = location.resolve()
    return location.parent.parent if location.name == "__init__.py" else location.parent


def stand_in(name: str) -> Optional[Path]:
    """The file or folder Python would import for package ``name`` when it is not ours, else None."""
    locations = _locations(name)
    if not locations or any(_package_folder(p) == HOME for p in locations):
        return None
    return locations[0]


def refuse(importer: str, names: tuple[str, ...]) -> None:
    """Stop when one of ``names`` (the packages ``importer`` needs) would come from somewhere else.

    Under ``python -m`` the message is one ``error:`` line and exit code 2 (the package is being
    imported by runpy, before any traceback handler of ours exists); an ``import`` in a user's
    script raises ``ImportError`` with the same words.
    """
    for name in names:
        path = stand_in(name)
        if path is None:
            continue
        message = (f"{path} stands in for the package '{name}' that {importer} needs, because "
                   f"`python -m` looks in the working folder first; use the `vqprior` command, "
                   f"or run from another folder")
        if sys.argv[:1] == ["-m"]:  # runpy sets argv[0] to the module's file only once it is imported
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2)
        raise ImportError(message)
