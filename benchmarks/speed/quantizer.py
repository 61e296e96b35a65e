"""Quantizer forward+backward: ours vs a straightforward one-hot implementation (the seed notebook's).

Each measurement runs in a fresh subprocess so peak resident memory (ru_maxrss) is its own;
the reported peak is the growth over the process's baseline after inputs are created.

    python -m benchmarks.speed.quantizer [--n 16384] [--k 512] [--d 64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


class OneHotQuantizer(torch.nn.Module):
    """The textbook version: full distance matrix, one-hot encodings, quantized = one_hot @ codebook."""

    def __init__(self, k: int, d: int, beta: float = 0.25):
        super().__init__()
        self.embedding = torch.nn.Parameter(torch.empty(k, d).uniform_(-1 / k, 1 / k))
        self.beta = beta

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = (flat.pow(2).sum(1, keepdim=True) + self.embedding.pow(2).sum(1)
                     - 2 * flat @ self.embedding.t())
        indices = distances.argmin(1)
        one_hot = torch.zeros(flat.shape[0], self.embedding.shape[0], device=z.device)
        one_hot.scatter_(1, indices[:, None], 1)
        quantized = one_hot @ self.embedding
        loss = F.mse_loss(quantized, flat.detach()) + self.beta * F.mse_loss(quantized.detach(), flat)
        quantized = flat + (quantized - flat).detach()
        probs = one_hot.mean(0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return quantized.view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2), loss, perplexity


def build(kind: str, k: int, d: int):
    if kind == "ours":
        from stage1_vqvae import VectorQuantizer
        return VectorQuantizer(k, d)
    return OneHotQuantizer(k, d)


def step(vq, z):
    out = vq(z)
    quantized, loss = (out.quantized, out.loss) if hasattr(out, "quantized") else out[:2]
    ((quantized ** 2).mean() + loss).backward()


def measure(kind: str, n: int, k: int, d: int, repeats: int) -> dict:
    torch.manual_seed(0)
    side = int(n ** 0.5)
    vq = build(kind, k, d)
    z = torch.randn(n // (side * side), d, side, side, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(vq, z)  # warm-up, and the peak-memory measurement
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    times = []
    for _ in range(repeats):
        z.grad = None
        vq.zero_grad(set_to_none=True)
        t = time.perf_counter()
        step(vq, z)
        times.append(time.perf_counter() - t)
    return {"kind": kind, "median_ms": 1e3 * statistics.median(times), "peak_mib": peak_kib / 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--child", choices=("ours", "onehot"))
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.n, a.k, a.d, a.repeats)))
        return
    results = {}
    for kind in ("onehot", "ours"):
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--child", kind, "--n", str(a.n), "--k", str(a.k),
                              "--d", str(a.d), "--repeats", str(a.repeats)], capture_output=True, text=True,
                             check=True)
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"N={a.n} K={a.k} D={a.d}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'':8} {'fwd+bwd ms':>11} {'peak MiB':>9}")
    for kind, r in results.items():
        print(f"{kind:8} {r['median_ms']:11.2f} {r['peak_mib']:9.1f}")
    print(f"speed-up {results['onehot']['median_ms'] / results['ours']['median_ms']:.2f}x, "
          f"memory {results['onehot']['peak_mib'] / max(results['ours']['peak_mib'], 1e-9):.2f}x lower")


if __name__ == "__main__":
    main()
