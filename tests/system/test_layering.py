"""The shape of the code: imports go one way, the run layout is named once, the CLI's words stay in the CLI.

Read from the source with ``ast``, so these hold for every module, not just the ones a test imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("data", "stage1_vqvae", "stage2_prior", "pipeline")
LEVEL = {"data": 0, "stage1_vqvae": 1, "stage2_prior": 1, "pipeline": 2}  # a package imports only lower levels
# The command-line layer: argument parsing, the console command, rendering errors as commands,
# the generator of docs/configuration.md.
CLI_MODULES = {"data/cli.py", "data/shadow.py", "data/config_docs.py", "pipeline/console.py",
               "pipeline/sample_files.py", "pipeline/__main__.py", "stage1_vqvae/__main__.py", "stage2_prior/__main__.py"}
RUN_FILES = ("config.yaml", "checkpoint.pt", "summary.json", "metrics.jsonl", "metrics.json", "index.html",
             "reconstructions.png", "bits_per_code.json", "quality.json", "inception_fid.json", "train.h5", "val.h5")
FLAG = re.compile(r"(^|[\s(`'\"])--[a-z][a-z-]*\b(?!:)|python -m ")  # a flag, not a CSS variable


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def name_of(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def imported_packages(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def strings(tree: ast.AST) -> list[str]:
    """Every string constant of the code, docstrings left out (they describe the layout and the commands)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.fixture(scope="module")
def trees() -> dict[str, ast.AST]:
    return {name_of(p): ast.parse(p.read_text(encoding="utf-8")) for p in modules()}


def test_imports_go_one_way_data_then_stages_then_pipeline(trees):
    upward = [(name, other) for name, tree in trees.items() for other in imported_packages(tree)
              if LEVEL[other] > LEVEL[name.split("/")[0]]
              or (LEVEL[other] == LEVEL[name.split("/")[0]] and other != name.split("/")[0])]
    assert upward == []


def module_imports(name: str, tree: ast.Module) -> set[str]:
    """The project modules (as ``pkg/mod``) that a module imports at its top level; package ``__init__``s left out."""
    package = name.split("/")[0]
    targets = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or "" if node.level == 0 else f"{package}.{node.module or ''}"
            targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
    return {t.replace(".", "/") for t in targets}


def test_modules_import_each_other_without_cycles(trees):
    names = {name.removesuffix(".py") for name in trees if not name.endswith("__init__.py")}
    graph = {name.removesuffix(".py"): module_imports(name, tree) & names
             for name, tree in trees.items() if not name.endswith("__init__.py")}

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        return seen

    assert sorted(name for name in graph if name in reaches(name)) == []


def test_only_the_run_directory_module_names_a_runs_files(trees):
    found = [(name, text) for name, tree in trees.items() if name != "data/rundir.py"
             for text in strings(tree) if any(file in text for file in RUN_FILES)]
    assert found == []


def test_library_code_never_words_a_flag_or_a_command(trees):
    found = [(name, text) for name, tree in trees.items() if name not in CLI_MODULES
             for text in strings(tree) if FLAG.search(text)]
    assert found == []
