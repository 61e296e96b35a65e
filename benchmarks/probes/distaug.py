"""Probe (not part of the product): distribution augmentation for the prior on the default data.

Encodes the training images shifted by one code cell in each of 8 directions (edges filled with
the darkest pixel), and trains the default prior on a mix of real grids (fraction P_ID) and
shifted ones, conditioned on the shift through the class-bias mechanism (real grids are class 0).
Val bits are measured on real grids (class 0): does seeing shifted grids help the prior on real
ones? P_ID = 1 is the control (same script, no shifted grids).

    python -m benchmarks.probes.distaug RUN STEPS P_ID SHIFT_PX SEED
    python -m benchmarks.probes.distaug runs/ablate/bpd-gaussian 3000 0.5 4 0
    python -m benchmarks.probes.distaug runs/ablate/bpd-gaussian 3000 1.0 4 0
"""

import sys
import time

import torch
import torch.nn.functional as F

from data import load_split, to_model_range
from data.codes import load_codes
from data.config_files import load_config
from data.training import cosine_lr
from stage1_vqvae.model import VQVAE
from stage2_prior.evaluate import bits_per_code
from stage2_prior.pixelcnn import GatedPixelCNN
from stage2_prior.train import build_optimizer

SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def shifted(x: torch.Tensor, dy: int, dx: int, px: int) -> torch.Tensor:
    padded = F.pad(x, (px, px, px, px), value=float(x.min()))
    h, w = x.shape[-2:]
    return padded[..., px + dy * px: px + dy * px + h, px + dx * px: px + dx * px + w]


def main(run: str, steps: int, p_id: float, px: int, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = load_config(f"{run}/config.yaml", [])
    vq = VQVAE.from_checkpoint(f"{run}/stage1/checkpoint.pt").eval()
    x = to_model_range(load_split(cfg.data, "train").images[:])
    with torch.no_grad():
        grids = [vq.encode(x)] + [torch.cat([vq.encode(shifted(x[i:i + 1000], dy, dx, px))
                                             for i in range(0, len(x), 1000)]) for dy, dx in SHIFTS]
    codes = torch.stack(grids)  # (9, N, h, w): real grids first
    assert torch.equal(codes[0], load_codes(f"{run}/codes/train.h5", split="train")[0].long())
    val = load_codes(f"{run}/codes/val.h5", split="val")[0].long()
    s2 = cfg.stage2
    model = GatedPixelCNN(vq.num_embeddings, s2.model_config(), num_classes=len(grids))
    optimizer = build_optimizer(model, s2.lr, s2.weight_decay)
    tic = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = s2.lr * float(cosine_lr(step, steps, s2.warmup_steps, "cosine"))
        index = torch.randint(codes.shape[1], (s2.batch_size,))
        shift = torch.where(torch.rand(s2.batch_size) < p_id, 0, torch.randint(1, len(grids), (s2.batch_size,)))
        batch = codes[shift, index]
        loss = F.cross_entropy(model(batch, shift), batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 500 == 0:
            real = torch.zeros(len(val), dtype=torch.long)
            print(step + 1, f"val {bits_per_code(model, val, real):.4f} "
                  f"train {bits_per_code(model, codes[0][:1000], real[:1000]):.4f} t {time.time() - tic:.0f}s")


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[1] in ("-h", "--help"):  # the usage is the docstring
        print(__doc__)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
