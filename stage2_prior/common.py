"""What every prior of this package shares: the check of class labels, the device, eval mode."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn


def check_labels(labels, num_classes: int, n: int, device) -> Optional[torch.Tensor]:
    """Labels (n,) int64 on ``device`` for a conditional prior, None for an unconditional one.

    Raises ValueError for missing labels, labels given to an unconditional prior, a wrong shape
    or a class outside [0, num_classes).
    """
    if not num_classes:
        if labels is not None:
            raise ValueError("labels given, but this prior is unconditional")
        return None
    if labels is None:
        raise ValueError(f"this prior is class-conditional ({num_classes} classes): pass labels")
    labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    return labels


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer, for the parameter-free priors)."""
    return next(iter([*module.parameters(), *module.buffers()])).device


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode (dropout off), then restore its former mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
