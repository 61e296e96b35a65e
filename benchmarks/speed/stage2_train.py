"""Prior training throughput (grids/s) of the default stage-2 config on 7x7 grids with K=512.

Times optimizer steps (forward, backward, AdamW) of the default learned prior (the gated
PixelCNN, or the transformer of the same hidden, layers and dropout) on random codes, after a few
warm-up steps; the full training loop adds evaluation and checkpoints on top.

    python -m benchmarks.speed.stage2_train [--architecture pixelcnn|transformer] [--steps 30] [--grid 7]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from data.config import PRIOR_CONFIGS, Stage2Config
from stage2_prior import build_prior
from stage2_prior.train import build_optimizer

K = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=PRIOR_CONFIGS, default="pixelcnn")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--grid", type=int, default=7)
    args = parser.parse_args()
    cfg = Stage2Config(architecture=args.architecture)
    torch.manual_seed(0)
    model = build_prior(K, cfg.model_config(), 0, (args.grid, args.grid))
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    codes = torch.randint(K, (cfg.batch_size, args.grid, args.grid))
    warmup = 3
    for step in range(warmup + args.steps):
        if step == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(codes), codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
    seconds = (time.perf_counter() - start) / args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg.model_config()}, "
          f"batch {cfg.batch_size}, {args.grid}x{args.grid}, K={K}: "
          f"{seconds * 1000:.0f} ms/step, {cfg.batch_size / seconds:.0f} grids/s, "
          f"{cfg.steps} steps = {cfg.steps * seconds:.0f} s")


if __name__ == "__main__":
    main()
