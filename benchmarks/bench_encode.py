"""Encoding to HDF5: throughput against a bare encoder forward, bytes per code, peak memory at N and 6N.

Images are synthetic uint8 batches made on the fly (a generator), so the only memory that could
grow with N is the encoder's and the writer's; each memory measurement runs in a fresh subprocess
and reports its peak resident memory (ru_maxrss).

Throughput: both paths are warmed up, then timed in alternating rounds in one process and the
median of the per-round ratios is reported, because a shared VM's speed drifts by +-30% over
seconds and a single back-to-back pair of timings is mostly noise.

    python benchmarks/bench_encode.py [--checkpoint runs/s1/stage1/checkpoint.pt] [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data import to_model_range
from stage1_vqvae import VQVAE
from stage1_vqvae.encode import encode_batches

BATCH = 1000


def load_model(checkpoint: str | None) -> VQVAE:
    if checkpoint and Path(checkpoint).is_file():
        return VQVAE.from_checkpoint(checkpoint)
    from data import load_config
    from stage1_vqvae.train import build_model

    torch.manual_seed(0)
    return build_model(load_config(None), 1).eval()


def batches(n: int):
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        yield torch.randint(0, 256, (size, 1, 28, 28), dtype=torch.uint8, generator=gen), torch.zeros(size, dtype=torch.int64)


def encode_to(model: VQVAE, n: int, path: Path) -> None:
    encode_batches(model, batches(n), path, grid=(7, 7), dataset="synthetic", split="train",
                   checkpoint_sha256="0" * 64, has_labels=True, device=torch.device("cpu"))


def bare_forward(model: VQVAE, n: int) -> None:
    with torch.no_grad():
        for images, _ in batches(n):
            model.encoder(to_model_range(images))


def child(mode: str, n: int, checkpoint: str | None) -> dict:
    """One pass in a fresh process: seconds, file size, and the process's peak resident memory."""
    model = load_model(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.h5"
        t = time.perf_counter()
        bare_forward(model, n) if mode == "bare" else encode_to(model, n, path)
        seconds = time.perf_counter() - t
        size = path.stat().st_size if path.exists() else 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"mode": mode, "n": n, "seconds": seconds, "bytes": size, "peak_mib": peak / 1024}


def run_child(mode: str, n: int, checkpoint: str | None) -> dict:
    args = [sys.executable, __file__, "--child", mode, "--n", str(n)] + (["--checkpoint", checkpoint] if checkpoint else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_rounds(model: VQVAE, n: int, rounds: int) -> list[tuple[float, float]]:
    """(bare seconds, encode seconds) per round, after one warm-up of each."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.h5"
        bare_forward(model, BATCH), encode_to(model, BATCH, path)
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            bare_forward(model, n)
            t1 = time.perf_counter()
            encode_to(model, n, path)
            out.append((t1 - t0, time.perf_counter() - t1))
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", default="runs/s1/stage1/checkpoint.pt")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--child", choices=("bare", "encode"))
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.n, a.checkpoint)))
        return
    rounds = timed_rounds(load_model(a.checkpoint), a.n, a.rounds)
    ratios = sorted(bare / enc for bare, enc in rounds)
    bare_rate = statistics.median(a.n / bare for bare, _ in rounds)
    enc_rate = statistics.median(a.n / enc for _, enc in rounds)
    enc = run_child("encode", a.n, a.checkpoint)
    enc6 = run_child("encode", 6 * a.n, a.checkpoint)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, checkpoint "
          f"{a.checkpoint if os.path.isfile(a.checkpoint) else '(untrained default model)'}")
    print(f"bare encoder forward: {bare_rate:.0f} images/s (median of {a.rounds} rounds of {a.n})")
    print(f"encode to HDF5:       {enc_rate:.0f} images/s")
    print(f"encode / bare, per round: median {statistics.median(ratios):.2f}x "
          f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f})")
    print(f"bytes on disk per code: {enc['bytes'] / (a.n * 49):.3f} (N={a.n}), {enc6['bytes'] / (6 * a.n * 49):.3f} (N={6 * a.n})")
    print(f"peak resident memory of the whole process: {enc['peak_mib']:.0f} MiB at N={a.n}, "
          f"{enc6['peak_mib']:.0f} MiB at N={6 * a.n}")


if __name__ == "__main__":
    main()
