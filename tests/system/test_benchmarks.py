"""The benchmark scripts: modules of the ``benchmarks`` package, run from the repository root with ``-m``."""

from __future__ import annotations

import importlib

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted(p for p in (ROOT / "benchmarks").rglob("*.py") if p.name != "__init__.py")


def module_name(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_the_benchmarks_are_grouped_by_kind():
    kinds = {p.relative_to(ROOT / "benchmarks").parts[0] for p in SCRIPTS if p.parent != ROOT / "benchmarks"}
    assert kinds == {"speed", "ablations", "probes"}
    assert not list((ROOT / "benchmarks").rglob("*.jsonl"))  # results live in runs/ or docs, not beside the code


@pytest.mark.parametrize("path", SCRIPTS, ids=module_name)
def test_each_benchmark_imports_as_a_module_without_editing_the_path(path):
    assert "sys.path" not in path.read_text(encoding="utf-8")
    module = importlib.import_module(module_name(path))
    assert module.__doc__ and "python -m " + module_name(path) in module.__doc__  # its usage names the module
