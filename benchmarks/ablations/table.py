"""Ablation runs side by side: ``vqprior compare`` over ``runs/ablate/TAG`` for each tag, its table printed.

    python -m benchmarks.ablations.table TAG [TAG ...]     # also writes runs/ablate/compare/compare.html

The rows ``benchmarks.ablations.prior`` appends to ``runs/ablate/ablation.jsonl`` stay the record of
every ablation; this compares the runs that are still on disk, in the report's own numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data.cli import run_main
from pipeline.compare import compare

RUNS = Path(__file__).resolve().parents[2] / "runs" / "ablate"


def main(tags: list[str]) -> int:
    if not tags:
        sys.exit("name the ablation runs to compare: python -m benchmarks.ablations.table TAG [TAG ...]")
    _, table = compare([RUNS / tag for tag in tags], RUNS / "compare")
    print(table.read_text(), end="")
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
