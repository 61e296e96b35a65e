"""Stage-1 training throughput (images/s) for a config, on synthetic images of the config's shape.

Synthetic data keeps the benchmark offline (CIFAR-10 needs a download); throughput does not
depend on pixel values. Times ``--steps`` optimizer updates after ``--warmup`` ones.

    python -m benchmarks.speed.stage1 --config configs/default.yaml [--device cpu|cuda]
        [--set stage1.compile=true] [--set stage1.channels_last=true]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from data import load_config, to_model_range
from data.training import make_accelerator
from stage1_vqvae.train import build_model

SHAPES = {"fashion_mnist_embedded": (1, 28, 28), "fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28),
          "cifar10": (3, 32, 32)}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    cfg = load_config(a.config, a.overrides + [f"run.device={a.device}"])
    s = cfg.stage1
    acc = make_accelerator(s.mixed_precision, cfg.run.device)
    shape = SHAPES.get(cfg.data.dataset, (3, cfg.data.image_size or 32, cfg.data.image_size or 32))
    model = build_model(cfg, shape[0])
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    model, opt = acc.prepare(model, opt)
    fwd = torch.compile(model) if s.compile else model
    images = torch.randint(0, 256, (s.batch_size, *shape), dtype=torch.uint8, device=acc.device)

    def step():
        x = to_model_range(images)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = fwd(x)
        loss = F.mse_loss(out.reconstruction.float(), x) / 0.06 + out.vq.loss
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()

    for _ in range(a.warmup):
        step()
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    if acc.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"{a.config} {' '.join(a.overrides)}: device {acc.device}, precision {acc.mixed_precision}, "
          f"batch {s.batch_size}, {torch.get_num_threads()} threads: "
          f"{a.steps * s.batch_size / dt:.0f} images/s ({1e3 * dt / a.steps:.1f} ms/step)")


if __name__ == "__main__":
    main()
