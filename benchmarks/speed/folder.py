"""Image-folder loading and stage-1 memory at scale (docs/results.md, "Memory and large folders").

    python -m benchmarks.speed.folder decode --folder /work/data/fmnist_flat      # 1 and 2 workers, then reuse
    python -m benchmarks.speed.folder memory --images 60000                       # peak RSS of stage-1 training
    python -m benchmarks.speed.folder memory --images 600000

``decode`` times a first decode of the folder into a fresh store with 1 and with 2 worker
processes, then a second load that finds the store current (the median of five). ``memory`` writes a synthetic
store of N random 28x28 images, trains stage 1 for a few steps in a fresh process reading its
batches from the store, and reports that process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def decode(folder: str) -> None:
    from data.folder_store import open_store

    with tempfile.TemporaryDirectory() as cache:
        rows = []
        for workers in (1, 2):
            tic = time.perf_counter()
            store = open_store(folder, 32, None, cache_dir=f"{cache}/w{workers}", workers=workers, log=lambda _: None)
            seconds = time.perf_counter() - tic
            rows.append({"load": f"first decode, {workers} worker(s)", "seconds": round(seconds, 2),
                         "images_per_s": round(store.shape[0] / seconds)})
        repeats = []
        for _ in range(5):  # the median of five later loads
            tic = time.perf_counter()
            store = open_store(folder, 32, None, cache_dir=f"{cache}/w2", workers=2, log=lambda _: None)
            repeats.append(time.perf_counter() - tic)
        seconds = sorted(repeats)[2]
        rows.append({"load": "second load (store current), median of 5", "seconds": round(seconds, 3),
                     "images_per_s": round(store.shape[0] / seconds),
                     "all_seconds": [round(r, 3) for r in repeats]})
    rows.append({"speed-up of the second load over the 2-worker decode": round(rows[1]["seconds"] / seconds, 1)})
    print(json.dumps(rows, indent=1))


def synthetic_store(path: Path, n: int) -> None:
    """A store of ``n`` random 1x28x28 images, written in chunks (as a decode would)."""
    from data.folder_store import STORE_VERSION

    path.mkdir(parents=True)
    gen = np.random.default_rng(0)
    with open(path / "images.u8", "wb") as out:
        for start in range(0, n, 10_000):
            out.write(gen.integers(0, 256, (min(10_000, n - start), 1, 28, 28), dtype=np.uint8).tobytes())
    index = {"version": STORE_VERSION, "root": "synthetic", "size": 28, "channels": 1, "count": n,
             "class_names": None, "fingerprint": ""}
    (path / "index.json").write_text(json.dumps(index))


def train_from_store(store: str, run: str, steps: int) -> None:
    """Stage-1 training whose image folder is the synthetic store (runs in a fresh process)."""
    import data.datasets as datasets
    from data.config_files import load_config
    from data.folder_store import FolderStore, read_index
    from stage1_vqvae.train import train

    opened = FolderStore(Path(store), read_index(Path(store)))

    def from_store(cfg, split):
        index = datasets._split_index(opened.shape[0], cfg.val_fraction, split)
        return datasets.ImageSet(opened.subset(index), None, None, cfg.dataset, split)

    datasets._image_folder = from_store
    overrides = ["data.dataset=image_folder", "data.val_fraction=0.01", f"stage1.steps={steps}",
                 f"stage1.eval_every={10 * steps}", f"stage1.checkpoint_every={steps}", "stage1.log_every=10"]
    train(load_config("default", overrides), Path(run))
    print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def memory(n: int, steps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_store(Path(tmp) / "store", n)
        child = [sys.executable, "-m", __spec__.name, "_train", f"{tmp}/store", f"{tmp}/run", str(steps)]
        result = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
        if result.returncode:
            sys.exit(result.stderr[-2000:])
        peak = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({"images": n, "steps": steps, **peak}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_train"]:
        torch.set_num_threads(2)
        train_from_store(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("decode", "memory"))
    parser.add_argument("--folder", default="/work/data/fmnist_flat")
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=50)
    a = parser.parse_args()
    decode(a.folder) if a.what == "decode" else memory(a.images, a.steps)
