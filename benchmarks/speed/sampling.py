"""Prior sampling: cached (incremental) against naive (one full forward per position), batch 64.

The prior is the default config's learned prior of the chosen architecture (the gated PixelCNN,
or the transformer with the same hidden, layers and dropout; K=512, random weights: speed does
not depend on them). Each time is the median of ``--repeats`` draws, naive and cached interleaved, after a warm-up
draw (naive grids above 8x8 are drawn once: they take minutes). Both methods draw the same uniforms, so their codes must agree; the script says whether
they did in float32 (the model's dtype in use) and in float64. Naive sampling on a 32x32 grid
takes about an hour on a CPU, so above ``--naive-max`` positions its time is H*W times the measured
time of one full forward (the cost of every naive step), and equality is checked on a batch of 4.

    python -m benchmarks.speed.sampling [--architecture pixelcnn|transformer] [--grids 8 16 32] [--batch 64]
                                        [--naive-max 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from data.config import PRIOR_CONFIGS, Stage2Config
from stage2_prior import build_prior, sample

K = 512


def default_prior(architecture: str, grid: tuple[int, int], dtype=torch.float32) -> torch.nn.Module:
    """The default config's prior of ``architecture`` for grids up to ``grid``, random weights."""
    torch.manual_seed(0)
    return build_prior(K, Stage2Config(architecture=architecture).model_config(), 0, grid).to(dtype).eval()


def draw(prior, batch, grid, method, seed=0):
    """The codes of one draw and its time."""
    start = time.perf_counter()
    codes = sample(prior, batch, grid, generator=torch.Generator().manual_seed(seed), method=method)
    return codes, time.perf_counter() - start


def timed_draws(prior, batch, grid, rounds: dict) -> tuple[dict, dict]:
    """{method: codes}, {method: median time} of ``rounds[method]`` draws each, interleaved (cached,
    naive, cached, ...) so that a slow spell of the machine falls on both methods; after a cached draw
    of the same size that warms up the kernels and the memory allocator (as every batch after a user's first)."""
    draw(prior, batch, grid, "cached")
    codes, times = {}, {method: [] for method in rounds}
    for r in range(max(rounds.values())):
        for method, count in rounds.items():
            if r < count:
                codes[method], t = draw(prior, batch, grid, method)
                times[method].append(t)
    return codes, {method: statistics.median(t) for method, t in times.items()}


@torch.no_grad()
def forward_time(prior, batch, grid, repeats=3) -> float:
    codes = torch.zeros(batch, *grid, dtype=torch.int64)
    prior(codes)
    start = time.perf_counter()
    for _ in range(repeats):
        prior(codes)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=PRIOR_CONFIGS, default="pixelcnn")
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--naive-max", type=int, default=256, help="largest H*W sampled naively at full batch")
    parser.add_argument("--repeats", type=int, default=5, help="cached draws timed (the median is reported), and "
                                                                "naive ones up to 8x8, interleaved; larger naive "
                                                                "draws are timed once")
    parser.add_argument("--check-batch", type=int, default=4, help="batch of the equality check above it")
    args = parser.parse_args()
    config = Stage2Config(architecture=args.architecture).model_config()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.architecture} prior {config}, "
          f"K={K}, batch {args.batch}")
    rows = []
    for size in args.grids:
        grid = (size, size)
        prior, prior64 = default_prior(args.architecture, grid), default_prior(args.architecture, grid, torch.float64)
        full = size * size <= args.naive_max
        rounds = {"cached": args.repeats, "naive": args.repeats if size * size <= 64 else 1 if full else 0}
        codes, times = timed_draws(prior, args.batch, grid, {m: r for m, r in rounds.items() if r})
        t_cached = times["cached"]
        if full:
            t_naive = times["naive"]
            same32, how = torch.equal(codes["cached"], codes["naive"]), f"median of {rounds['naive']}"
        else:  # every naive step is one full forward: time a few, check equality on a smaller batch
            t_naive = forward_time(prior, args.batch, grid) * size * size
            same32 = torch.equal(draw(prior, args.check_batch, grid, "cached")[0],
                                 draw(prior, args.check_batch, grid, "naive")[0])
            how = f"estimated; equality on batch {args.check_batch}"
        same64 = None
        if size <= 8:  # float64 naive sampling is slow; one small grid shows the exactness
            same64 = torch.equal(draw(prior64, args.batch, grid, "cached")[0],
                                 draw(prior64, args.batch, grid, "naive")[0])
        row = {"architecture": args.architecture, "grid": f"{size}x{size}", "cached_s": round(t_cached, 3),
               "naive_s": round(t_naive, 2),
               "naive_timing": how, "speedup": round(t_naive / t_cached, 1), "identical_fp32": same32,
               "identical_fp64": same64}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
