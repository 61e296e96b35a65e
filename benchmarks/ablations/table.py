"""Print rows of the JSONL file benchmarks.ablations.prior writes as the Markdown ablation table of docs/results.md.

    python -m benchmarks.ablations.table                      # every row of runs/ablate/ablation.jsonl
    python -m benchmarks.ablations.table fm-p3000 fm-dec4     # rows whose tag is one of these
    ABLATIONS=other.jsonl python -m benchmarks.ablations.table
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROWS = Path(os.environ.get("ABLATIONS", Path(__file__).resolve().parents[2] / "runs" / "ablate" / "ablation.jsonl"))

HEADER = ("| tag | dataset | setting | val NMSE | learned bits per code (x uniform) | train bits (gap) "
          "| fd_learned / floor | FD draws | FD across the sweep (T: FD) | stage-2 s |")


def row(r: dict) -> str:
    setting = ", ".join(r["overrides"]) or "defaults"
    if r.get("from_run"):
        setting += f" (stage 1 of {Path(r['from_run']).name})"
    train = r.get("bits_learned_train")
    gap = f"{train:.3f} ({r['bits_learned'] - train:+.3f})" if train is not None else "–"
    draws = r.get("fd_learned_draws") or []
    spread = f"{len(draws)}: {min(draws):.1f}–{max(draws):.1f}" if draws else "1"
    sweep = ", ".join(f"{t}: {v:.0f}" for t, v in sorted(r["fd_by_temperature"].items(), key=lambda kv: float(kv[0])))
    return (f"| {r['tag']} | {r['dataset']} | {setting} | {r['val_nmse']:.4f} | {r['bits_learned']:.3f} "
            f"({r['ratio_uniform']:.3f}) | {gap} | {r['fd_learned']:.2f} / {r['fd_recon']:.2f} = "
            f"**{r['fd_ratio']:.2f}x** | {spread} | {sweep} | {r['stage2_s']:.0f} |")


def main() -> None:
    if not ROWS.is_file():
        sys.exit(f"no ablation rows at {ROWS}: run benchmarks.ablations.prior first (or set ABLATIONS)")
    rows = [json.loads(line) for line in ROWS.read_text().splitlines()]
    wanted = sys.argv[1:]
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for r in rows:
        if not wanted or r["tag"] in wanted:
            print(row(r))


if __name__ == "__main__":
    main()
