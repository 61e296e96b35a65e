"""Training plumbing both stages share: the accelerator, seeding, step-indexed batches.

Batches are a pure function of (seed, step, process): epoch ``e`` visits a permutation drawn
from a generator seeded with (seed, e), and process ``r`` of ``w`` takes the r-th slice of
each global batch. A resumed run therefore sees exactly the batches an uninterrupted run
would, with no data-loader state to save.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from .errors import UserError


def resolve_device(device: str) -> torch.device:
    """``run.device`` as a torch device: ``auto`` takes CUDA when there is one."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device is 'cuda' but no CUDA GPU is visible; set run.device=auto or cpu")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def make_accelerator(mixed_precision: str, device: str):
    """An ``accelerate.Accelerator``; ``auto`` precision means bf16 on CUDA, full precision on CPU.

    bf16 asked for explicitly is honoured on the CPU too (autocast there is slower than fp32 for
    these layer sizes, but it runs the exact code path a GPU run takes); fp16 needs a GPU.
    """
    from accelerate import Accelerator

    cpu = resolve_device(device).type == "cpu"
    if mixed_precision == "auto":
        mixed_precision = "no" if cpu else "bf16"
    if cpu and mixed_precision == "fp16":
        raise UserError("mixed_precision fp16 needs a GPU; use bf16 (or no) on the CPU")
    # accelerate keeps one precision per process; each stage (and encode) chooses its own, so the
    # shared state is cleared first (the distributed set-up, PartialState, is kept).
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def run_environment(accelerator) -> dict:
    """What a result depends on beyond config and seed: recorded in checkpoints and summaries."""
    return {"device": accelerator.device.type, "mixed_precision": accelerator.mixed_precision,
            "threads": torch.get_num_threads(), "processes": accelerator.num_processes}


def warn_if_threads_differ(saved: dict | None, stage: str) -> None:
    """Resuming under another thread count is allowed, but its result is no longer bit-identical."""
    if saved and saved.get("threads") not in (None, torch.get_num_threads()):
        print(f"warning: {stage} began with {saved['threads']} threads and resumes with {torch.get_num_threads()}; "
              "the result will differ in the last bits from an uninterrupted run (set OMP_NUM_THREADS to match)",
              file=sys.stderr)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepBatches:
    """Indices of the batch for any step, identical whether a run was resumed or not."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.global_batch = batch_size * world
        if n < self.global_batch:
            raise UserError(f"the training set has {n} items, fewer than one batch of {self.global_batch}; "
                            "lower batch_size")
        self.per_epoch = n // self.global_batch  # drop the ragged last batch
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        start = k * self.global_batch + self.rank * self.batch_size
        return self._perm[start:start + self.batch_size]


def wait_for_everyone() -> None:
    """A barrier across the processes of a multi-process launch; nothing in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def process_rank() -> int:
    """This process's rank under a multi-process launch (0 otherwise)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def process_count() -> int:
    """The number of processes of an initialised multi-process group (1 otherwise)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def replicas_agree(module: torch.nn.Module) -> bool:
    """Whether every process holds exactly the same weights and buffers (codebook, EMA statistics).

    All-gathers each process's state as one float64 vector; trivially True in a single process.
    """
    import torch.distributed as dist

    if process_count() == 1:
        return True
    mine = torch.cat([t.detach().double().flatten().cpu() for t in module.state_dict().values()])
    everyone = [torch.empty_like(mine) for _ in range(process_count())]
    dist.all_gather(everyone, mine)
    return all(torch.equal(everyone[0], other) for other in everyone[1:])


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch (``accelerate launch``, torchrun)."""
    return process_rank() == 0


def cosine_lr(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to 0 or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress)))
