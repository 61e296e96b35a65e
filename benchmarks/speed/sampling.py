"""Prior sampling: cached (incremental) against naive (one full forward per position), batch 64.

The prior is the default config's GatedPixelCNN (K=512, random weights: speed does not depend on
them). Both methods draw the same uniforms, so their codes must agree; the script says whether
they did in float32 (the model's dtype in use) and in float64. Naive sampling on a 32x32 grid
takes about an hour on a CPU, so above ``--naive-max`` positions its time is H*W times the measured
time of one full forward (the cost of every naive step), and equality is checked on a batch of 4.

    python -m benchmarks.speed.sampling [--grids 8 16 32] [--batch 64] [--naive-max 256]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from data.config import Stage2Config
from stage2_prior import GatedPixelCNN, sample

K = 512


def default_prior(dtype=torch.float32) -> GatedPixelCNN:
    cfg = Stage2Config()
    torch.manual_seed(0)
    return GatedPixelCNN(K, cfg.model_config()).to(dtype).eval()


def timed_sample(prior, batch, grid, method, seed=0):
    start = time.perf_counter()
    codes = sample(prior, batch, grid, generator=torch.Generator().manual_seed(seed), method=method)
    return codes, time.perf_counter() - start


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
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--naive-max", type=int, default=256, help="largest H*W sampled naively at full batch")
    parser.add_argument("--check-batch", type=int, default=4, help="batch of the equality check above it")
    args = parser.parse_args()
    prior, prior64 = default_prior(), default_prior(torch.float64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, prior {Stage2Config().hidden} hidden x "
          f"{Stage2Config().layers} layers, kernel {Stage2Config().kernel_size}, K={K}, batch {args.batch}")
    rows = []
    for size in args.grids:
        grid = (size, size)
        cached, t_cached = timed_sample(prior, args.batch, grid, "cached")
        if size * size <= args.naive_max:
            naive, t_naive = timed_sample(prior, args.batch, grid, "naive")
            same32, how = torch.equal(cached, naive), "full"
        else:  # every naive step is one full forward: time a few, check equality on a smaller batch
            t_naive = forward_time(prior, args.batch, grid) * size * size
            same32 = torch.equal(timed_sample(prior, args.check_batch, grid, "cached")[0],
                                 timed_sample(prior, args.check_batch, grid, "naive")[0])
            how = f"estimated; equality on batch {args.check_batch}"
        same64 = None
        if size <= 8:  # float64 naive sampling is slow; one small grid shows the exactness
            same64 = torch.equal(timed_sample(prior64, args.batch, grid, "cached")[0],
                                 timed_sample(prior64, args.batch, grid, "naive")[0])
        row = {"grid": f"{size}x{size}", "cached_s": round(t_cached, 3), "naive_s": round(t_naive, 2),
               "naive_timing": how, "speedup": round(t_naive / t_cached, 1), "identical_fp32": same32,
               "identical_fp64": same64}
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
