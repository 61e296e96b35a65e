"""Prior training throughput (grids/s) of the default stage-2 config on 7x7 grids with K=512.

Times optimizer steps (forward, backward, AdamW) of the default learned prior of each
architecture named (the gated PixelCNN, and the transformer of the same hidden, layers and
dropout) on random codes. With several, their steps are timed in interleaved rounds in one
process, so the ratio holds even while the machine's speed drifts; each time is the median of the
rounds, after warm-up steps. The full training loop adds evaluation and checkpoints on top.

    python -m benchmarks.speed.stage2_train [--architecture pixelcnn transformer] [--steps 10] [--rounds 4]
                                            [--grid 7] [--set stage2.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from data.config import PRIOR_CONFIGS
from data.config_files import load_config
from stage2_prior import build_prior
from stage2_prior.train import build_optimizer

K = 512


def timed_steps(model, optimizer, codes, steps: int, grad_clip: float) -> float:
    """Seconds per optimizer step over ``steps`` steps."""
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(codes), codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", nargs="+", choices=PRIOR_CONFIGS, default=["pixelcnn"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="stage2 overrides")
    args = parser.parse_args()
    trainees = {}
    for architecture in args.architecture:
        cfg = load_config(None, [f"stage2.architecture={architecture}", *args.overrides]).stage2
        torch.manual_seed(0)
        model = build_prior(K, cfg.model_config(), 0, (args.grid, args.grid))
        trainees[architecture] = (cfg, model, build_optimizer(model, cfg.lr, cfg.weight_decay))
    codes = torch.randint(K, (next(iter(trainees.values()))[0].batch_size, args.grid, args.grid))
    times = {a: [] for a in trainees}
    for _ in range(args.rounds):
        for architecture, (cfg, model, optimizer) in trainees.items():
            timed_steps(model, optimizer, codes, 3, cfg.grad_clip)  # warm-up
            times[architecture].append(timed_steps(model, optimizer, codes, args.steps, cfg.grad_clip))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {len(codes)}, "
          f"{args.grid}x{args.grid}, K={K}")
    first = statistics.median(times[args.architecture[0]])
    for architecture, (cfg, model, _) in trainees.items():
        seconds = statistics.median(times[architecture])
        print(f"{cfg.model_config()}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{seconds * 1000:.0f} ms/step, {len(codes) / seconds:.0f} grids/s, {cfg.steps} steps = "
              f"{cfg.steps * seconds:.0f} s, {seconds / first:.2f}x the time of {args.architecture[0]}")


if __name__ == "__main__":
    main()
