"""Run one prior ablation and append its held-out numbers to a JSONL file (runs/ablate/ablation.jsonl by
default; the tables of docs/results.md were written from it; benchmarks.ablations.table compares the runs).

    python -m benchmarks.ablations.prior --tag glyphs-default --set data.dataset=image_folder \\
        --set data.root=/work/data/glyphs
    python -m benchmarks.ablations.prior --tag glyphs-ema --from-run runs/ablate/glyphs-default \\
        --set stage2.ema_decay=0.999          # reuses that run's stage 1 and codes

Each row: tag, dataset, overrides, val NMSE, learned / marginal / uniform bits per code (and the
learned/uniform ratio), train bits of the learned prior, fd_learned / fd_reconstructions, FD per
temperature, and the wall time of each step. Rows are decided on these held-out (val) numbers only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--config", default="default")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--from-run", help="reuse this run's stage 1, codes and classifier")
    parser.add_argument("--keep-prior", action="store_true", help="with --from-run: reuse its prior too "
                        "(for sampling settings: only samples and quality are redone)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "ablate"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "ablate" / "ablation.jsonl"))
    args = parser.parse_args()

    run = Path(args.runs) / args.tag
    if run.exists():
        shutil.rmtree(run)
    command = [sys.executable, "-m", "pipeline", "run", "--run", str(run)]
    if args.from_run:
        source = Path(args.from_run)
        run.mkdir(parents=True)
        for name in ("config.yaml", "stage1", "codes", "classifier", *(["stage2"] if args.keep_prior else [])):
            if (source / name).is_dir():
                shutil.copytree(source / name, run / name)
            elif (source / name).is_file():
                shutil.copy(source / name, run / name)
        command.append("--resume")
    else:
        command += ["--config", args.config]
    for item in args.overrides:
        command += ["--set", item]
    tic = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    if not (run / "report" / "quality.json").is_file():  # the numbers below; the report itself is optional here
        sys.exit(f"{args.tag} failed:\n{result.stderr[-3000:]}")
    read = lambda name: json.loads((run / name).read_text())  # noqa: E731
    stage1, stage2, bits, q = (read(n) for n in ("stage1/summary.json", "stage2/summary.json",
                                                 "stage2/bits_per_code.json", "report/quality.json"))
    row = {
        "tag": args.tag, "dataset": read_config(run), "overrides": args.overrides, "from_run": args.from_run,
        "val_nmse": round(stage1["val_recon_nmse"], 4),
        "bits_learned": round(bits["learned"], 4), "bits_marginal": round(bits["marginal"], 4),
        "bits_uniform": round(bits["uniform"], 4), "ratio_uniform": round(bits["learned"] / bits["uniform"], 4),
        "bits_learned_train": bits.get("learned_train"),
        "fd_learned": round(q["fd_learned"], 3), "fd_recon": round(q["fd_reconstructions"], 3),
        "fd_ratio": round(q["fd_learned"] / q["fd_reconstructions"], 3),
        "fd_learned_draws": [round(v, 3) for v in (q.get("fd_by_draw") or {}).get("learned", [])],
        "fd_by_temperature": {k.removeprefix("fd_learned_T"): round(v, 3) for k, v in q.items()
                              if k.startswith("fd_learned_T")},
        "stage1_s": stage1.get("train_seconds"), "stage2_s": stage2.get("train_time_s"),
        "wall_s": round(seconds, 1), "report_ok": result.returncode == 0,
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def read_config(run: Path) -> str:
    import yaml

    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    return data["dataset"] if data["dataset"] != "image_folder" else f"folder:{Path(data['root']).name}"


if __name__ == "__main__":
    main()
