"""Encoding to HDF5: throughput against a bare encoder forward, bytes per code, peak memory at N and 6N.

Images are synthetic uint8 batches made on the fly (a generator), so the only memory that could
grow with N is the encoder's and the writer's; each memory measurement runs in a fresh subprocess
and reports its peak resident memory (ru_maxrss).

Throughput: the bare encoder (as ``for_inference`` lays it out, channels-last), the same encoder
in the default contiguous layout, and the full encode are warmed up, then timed in alternating
rounds in one process and the medians of the per-round ratios are reported, because a shared VM's
speed drifts by +-30% over seconds and a single back-to-back pair of timings is mostly noise.

    python -m benchmarks.speed.encode [--checkpoint runs/s1/stage1/checkpoint.pt] [--n 10000]
    python -m benchmarks.speed.encode --checkpoint none --config configs/cifar10.yaml   # untrained model of a config

Synthetic random pixels cost the encoder and the search exactly what real images cost
(the work depends only on the shapes), so the ratio holds for real data.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data import load_config, to_model_range
from stage1_vqvae import VQVAE
from stage1_vqvae.encode import encode_batches
from stage1_vqvae.train import build_model

BATCH = 1000


def load_model(a: argparse.Namespace) -> tuple[VQVAE, tuple[int, int, int]]:
    """The model to time and its image shape (C, H, W): a trained checkpoint, else an untrained model of --config."""
    if Path(a.checkpoint).is_file():
        model = VQVAE.from_checkpoint(a.checkpoint)
    else:
        torch.manual_seed(0)
        model = build_model(load_config(a.config), a.channels).for_inference()
    return model, (model.in_channels, a.image_size, a.image_size)


def batches(n: int, shape: tuple[int, int, int]):
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        images = torch.randint(0, 256, (size, *shape), dtype=torch.uint8, generator=gen)
        yield images, torch.zeros(size, dtype=torch.int64)


def encode_to(model: VQVAE, n: int, shape: tuple[int, int, int], path: Path) -> None:
    encode_batches(model, batches(n, shape), path, grid=model.grid_size(shape[1:]), dataset="synthetic",
                   split="train", checkpoint_sha256="0" * 64, has_labels=True, device=torch.device("cpu"))


def bare_forward(model: VQVAE, n: int, shape: tuple[int, int, int]) -> None:
    with torch.no_grad():
        for images, _ in batches(n, shape):
            model.encoder(to_model_range(images))


def child(a: argparse.Namespace) -> dict:
    """One encode in a fresh process: file size and the process's peak resident memory."""
    model, shape = load_model(a)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.h5"
        encode_to(model, a.n, shape, path)
        size = path.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"n": a.n, "bytes": size, "peak_mib": peak / 1024}


def run_child(a: argparse.Namespace, n: int) -> dict:
    args = [sys.executable, "-m", __spec__.name, "--child", "--n", str(n), "--checkpoint", a.checkpoint,
            "--config", a.config, "--image-size", str(a.image_size), "--channels", str(a.channels)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_rounds(model: VQVAE, shape: tuple[int, int, int], n: int, rounds: int) -> list[dict[str, float]]:
    """Seconds per round for: the bare encoder as loaded (channels-last), the same encoder in the
    default contiguous layout, and the full encode to HDF5; after one warm-up of each."""
    plain = copy.deepcopy(model)
    plain.encoder.to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "codes.h5"
        paths = {"bare": lambda size: bare_forward(model, size, shape),
                 "bare_nchw": lambda size: bare_forward(plain, size, shape),
                 "encode": lambda size: encode_to(model, size, shape, path)}
        for run in paths.values():
            run(BATCH)  # warm-up: first calls pay for oneDNN kernel selection
        out = []
        for _ in range(rounds):
            times = {}
            for name, run in paths.items():
                t0 = time.perf_counter()
                run(n)
                times[name] = time.perf_counter() - t0
            out.append(times)
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/s1/stage1/checkpoint.pt", help="'none' = untrained model of --config")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return
    model, shape = load_model(a)
    rounds = timed_rounds(model, shape, a.n, a.rounds)
    ratios = sorted(r["bare"] / r["encode"] for r in rounds)
    codes_per_image = math.prod(model.grid_size(shape[1:]))
    enc, enc6 = run_child(a, a.n), run_child(a, 6 * a.n)
    source = a.checkpoint if Path(a.checkpoint).is_file() else f"untrained model of {a.config}"
    rate = {name: statistics.median(a.n / r[name] for r in rounds) for name in rounds[0]}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {source}, images {shape}")
    print(f"bare encoder forward: {rate['bare']:.0f} images/s channels-last (as loaded), "
          f"{rate['bare_nchw']:.0f} images/s contiguous (median of {a.rounds} rounds of {a.n})")
    print(f"encode to HDF5:       {rate['encode']:.0f} images/s")
    print(f"encode / bare, per round: median {statistics.median(ratios):.2f}x "
          f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}); channels-last / contiguous encoder: "
          f"{statistics.median(r['bare_nchw'] / r['bare'] for r in rounds):.2f}x")
    print(f"bytes on disk per code: {enc['bytes'] / (a.n * codes_per_image):.3f} (N={a.n}), "
          f"{enc6['bytes'] / (6 * a.n * codes_per_image):.3f} (N={6 * a.n})")
    print(f"peak resident memory of the whole process: {enc['peak_mib']:.0f} MiB at N={a.n}, "
          f"{enc6['peak_mib']:.0f} MiB at N={6 * a.n}")


if __name__ == "__main__":
    main()
