"""The feature classifier of the sample-quality measure: a small CNN whose penultimate layer gives
the features in which ``pipeline.frechet`` compares image sets.

It is trained on the run's training images and predicts the dataset's labels. A dataset without
labels (an unlabelled image folder) trains it on a self-supervised proxy task instead: rotation
prediction, where each image is turned by 0, 90, 180 or 270 degrees and the network predicts
which; telling the rotations apart needs the same shape features that separate real images from
poor samples. The network depends on the training images, ``sample.classifier_steps`` and
``sample.classifier_seed`` (not ``run.seed``), so runs of one dataset with other seeds are
measured in the same feature space; a run keeps it while current (``load_or_train_classifier``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import Config, load_split, to_model_range
from data.checkpoint import load_checkpoint, load_weights, save_checkpoint
from data.errors import BadFile
from data.provenance import KEY, fingerprint, stale_reason
from data.rundir import RunPaths
from data.training import StepBatches, cosine_lr, seed_everything

ROTATIONS = 4  # the proxy task's classes: 0, 90, 180, 270 degrees


class FeatureClassifier(nn.Module):
    """Three 3x3 convolutions (two of stride 2), adaptive average pooling to 4x4, then two linear layers.

    ``features(x)`` is the ReLU output of the first linear layer (``feature_dim`` values, the
    penultimate layer); ``forward(x)`` adds the linear head and returns logits. The adaptive
    pooling makes the network accept any image size (28x28, 32x32, ...) and channel count.
    ``task`` records what the head predicts: ``"labels"`` (the dataset's classes) or
    ``"rotation"`` (the unlabelled proxy task).
    """

    def __init__(self, in_channels: int, num_classes: int, task: str = "labels", width: int = 16,
                 feature_dim: int = 128):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, task=task, width=width,
                           feature_dim=feature_dim)
        self.task = task
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(4 * width * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# ---------------------------------------------------------------- the proxy task for unlabelled data


def rotate(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn image i of (B, C, H, W) ``images`` by ``turns[i]`` x 90 degrees (square images only)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(images.shape[-2:])}")
    out = images.clone()
    for k in range(1, ROTATIONS):
        chosen = turns == k
        out[chosen] = torch.rot90(images[chosen], k, dims=(-2, -1))
    return out


def task_batch(images: torch.Tensor, labels: torch.Tensor | None,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of one batch: the labels, or random rotations and their indices."""
    if labels is not None:
        return images, labels
    turns = torch.randint(ROTATIONS, (len(images),), generator=generator).to(images.device)
    return rotate(images, turns), turns


# ---------------------------------------------------------------- training and accuracy


def train_classifier(images: torch.Tensor, labels: torch.Tensor | None, num_classes: int | None = None,
                     steps: int = 600, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = False) -> FeatureClassifier:
    """Train a ``FeatureClassifier`` on uint8 (N, C, H, W) ``images``; deterministic given ``seed``.

    Adam with a cosine-decayed learning rate minimises the cross-entropy of the labels, or of
    the rotation index when ``labels`` is None. Batches come from ``StepBatches`` (a function
    of the seed and the step), so the same seed gives the same network on the same machine.
    """
    seed_everything(seed)
    task = "labels" if labels is not None else "rotation"
    if labels is not None and num_classes is None:
        num_classes = int(labels.max()) + 1
    model = FeatureClassifier(images.shape[1], num_classes if labels is not None else ROTATIONS, task).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = StepBatches(len(images), min(batch_size, len(images)), seed)
    rotations = torch.Generator().manual_seed(seed)
    model.train()
    for step in tqdm(range(steps), desc="classifier", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_lr(step, steps, 0, "cosine")
        index = batches(step)
        x = to_model_range(images[index]).to(device)
        y = labels[index].to(device) if labels is not None else None
        x, y = task_batch(x, y, rotations)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(classifier: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor | None,
             batch_size: int = 512) -> float:
    """Share of uint8 ``images`` classified correctly; for the rotation task, of all four turns of each."""
    classifier.eval()
    device = next(classifier.parameters()).device
    correct = total = 0
    for start in range(0, len(images), batch_size):
        x = to_model_range(images[start:start + batch_size]).to(device)
        if classifier.task == "labels":
            cases = [(x, labels[start:start + batch_size].to(device))]
        else:
            cases = [(rotate(x, torch.full((len(x),), k, device=device)), torch.full((len(x),), k, device=device))
                     for k in range(ROTATIONS)]
        for inputs, targets in cases:
            correct += (classifier(inputs).argmax(1) == targets).sum().item()
            total += len(targets)
    return correct / total


# ---------------------------------------------------------------- checkpoint


def save_classifier(classifier: FeatureClassifier, path: str | Path, val_accuracy: float,
                    computed_from: dict | None = None) -> None:
    """Atomically save weights, constructor arguments, val accuracy and what it was trained from."""
    save_checkpoint(path, "classifier", model={k: v.detach().cpu() for k, v in classifier.state_dict().items()},
                    model_config=classifier.config, val_accuracy=float(val_accuracy), **{KEY: computed_from or {}})


def load_classifier(path: str | Path) -> tuple[FeatureClassifier, float]:
    """(classifier in eval mode on the CPU, its val accuracy); loads with weights_only."""
    state = load_checkpoint(path, "classifier", ("val_accuracy",))
    try:
        classifier = FeatureClassifier(**state["model_config"])
    except TypeError:
        raise BadFile(f"{path} holds a feature classifier of another version", path=path,
                      advice="delete it to train a new one") from None
    load_weights(classifier, state["model"], path)
    return classifier.eval(), state["val_accuracy"]


def classifier_settings(config: Config) -> dict:
    """What the classifier depends on: a saved one is reused only while these are unchanged.

    Where and how an image folder is decoded (``cache_dir``, ``workers``) does not change its pixels.
    """
    data = {k: v for k, v in dataclasses.asdict(config.data).items() if k not in ("cache_dir", "workers")}
    return {"data": data, "steps": config.sample.classifier_steps, "seed": config.sample.classifier_seed}


def load_or_train_classifier(paths: RunPaths, config: Config, device: str | torch.device = "cpu",
                             log: Callable[[str], None] = print) -> tuple[FeatureClassifier, float]:
    """(classifier, val accuracy): reuse the run's classifier while current, else train one on the train split.

    Current means trained with these data settings, steps and seed (the ``data.provenance`` rule);
    any other saved classifier, or an unreadable one, is replaced.
    """
    path, expected = paths.classifier_checkpoint, fingerprint(paths, [], classifier_settings(config))
    why = stale_reason(path, expected)
    if why is None:
        classifier, val_accuracy = load_classifier(path)
        return classifier.to(device), val_accuracy
    if path.is_file():
        log(f"{path}: {why}; training a new feature classifier")
    train, val = load_split(config.data, "train"), load_split(config.data, "val")
    classifier = train_classifier(train.images, train.labels, train.num_classes or None,
                                  steps=config.sample.classifier_steps, seed=config.sample.classifier_seed,
                                  device=device, progress=True)
    val_accuracy = accuracy(classifier, val.images, val.labels)
    save_classifier(classifier, path, val_accuracy, expected)
    log(f"feature classifier ({classifier.task}): val accuracy {val_accuracy:.3f}, saved to {path}")
    return classifier, val_accuracy


# ---------------------------------------------------------------- features


@torch.no_grad()
def features(classifier: FeatureClassifier, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, F) float64 penultimate-layer features of float ``images`` in the model range.

    Inputs are clamped to the model range [-0.5, 0.5] first, as they are when saved as images,
    so a decoder's overshoot does not count as a difference from the real images.
    """
    classifier.eval()
    device = next(classifier.parameters()).device
    chunks = [classifier.features(images[i:i + batch_size].to(device).float().clamp(-0.5, 0.5)).double().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)
