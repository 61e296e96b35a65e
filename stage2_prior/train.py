"""Stage-2 training: fit the learned prior (gated PixelCNN or transformer) to the training codes by maximum likelihood.

    loss = -1 / (B H W) * sum_{b, i, j} ln p(z^b_ij | z^b_<ij)        (nats, cross-entropy)

logged as bits per code (loss / ln 2) next to the same quantity on the val codes. AdamW
(weight decay on weight matrices only, as in nanoGPT), linear warm-up then cosine decay,
dropout inside the gated layers, optional gradient clipping, and optionally an exponential
moving average of the weights (``stage2.ema_decay``) that is evaluated, saved and sampled. Runs through ``accelerate``:
bf16 on a GPU, several GPUs under ``accelerate launch``.

Resuming is exact on the CPU: the checkpoint holds model, optimizer, step and every RNG,
batches are a function of the step (``data.training.StepBatches``) and the learning rate
a function of the step, so a killed run, resumed, ends with the weights
of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.checkpoint import load_checkpoint, load_weights, save_checkpoint
from data.codes import CodeDataset, load_codes
from data.config import Config
from data.errors import UserError
from data.io import MetricsLog, capture_rng, logged_time, restore_rng, write_json
from data.rundir import RunPaths, commit_config
from data.training import (StepBatches, cosine_lr, is_main_process, make_accelerator, run_environment,
                           seed_everything, warn_if_threads_differ)

from .baselines import marginal_log_probs
from .evaluate import bits_per_code
from .learned import CHECKPOINT_KEYS, build_prior

RESUME_KEYS = (*CHECKPOINT_KEYS, "optimizer", "step", "rng")


def load_training_codes(run_dir: Path, conditional: bool):
    """The train codes as a CodeDataset and the val codes (from the same stage-1 checkpoint), validated."""
    paths = RunPaths(run_dir)
    train = CodeDataset(paths.codes("train"), split="train")
    info = train.info
    val_codes, val_labels, _ = load_codes(paths.codes("val"), split="val", num_embeddings=info.num_embeddings,
                                          grid=info.grid, stage1_checkpoint_sha256=info.stage1_checkpoint_sha256)
    if conditional and (train.labels is None or val_labels is None):
        raise UserError(f"stage2.conditional is true but the codes in {paths.codes_dir} have no labels; "
                        "set stage2.conditional=false or use a labelled dataset")
    return train, val_codes, (val_labels if conditional else None)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the weight matrices and embeddings (ndim >= 2), not biases."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def check_resumable(state: dict, model_config: dict, num_classes: int, info) -> None:
    """The checkpoint must come from these codes and this model configuration."""
    trained_on = (state["num_embeddings"], tuple(state["grid"]), state["stage1_checkpoint_sha256"])
    if trained_on != (info.num_embeddings, info.grid, info.stage1_checkpoint_sha256):
        raise UserError(f"the codes in {info.path.parent} (K={info.num_embeddings}, {info.grid[0]}x{info.grid[1]}) "
                        f"are not those the stage-2 checkpoint was trained on (K={state['num_embeddings']}, "
                        f"{state['grid'][0]}x{state['grid'][1]}, or another stage-1 checkpoint); "
                        "train stage 2 afresh in a new run")
    if (state["model_config"], state["num_classes"]) != (model_config, num_classes):
        raise UserError(f"the stage-2 checkpoint's model ({state['model_config']}) differs from the config's "
                        f"({model_config}); resume with the original stage2 settings or start a new run")


def load_inputs(run_dir: Path, settings, resume: bool):
    """Validated codes, the checkpoint to resume from (or None) and the number of classes."""
    train_set, val_codes, val_labels = load_training_codes(run_dir, settings.conditional)
    info = train_set.info
    checkpoint_path = RunPaths(run_dir).stage2_checkpoint
    state = load_checkpoint(checkpoint_path, "stage2", RESUME_KEYS) if resume and checkpoint_path.exists() else None
    if resume and state is None and is_main_process():
        print(f"no checkpoint at {checkpoint_path} yet: starting stage 2 from step 0")
    num_classes = int(train_set.labels.max()) + 1 if settings.conditional else 0
    if state is not None:
        num_classes = state["num_classes"]
        check_resumable(state, asdict(settings.model_config()), num_classes, info)
    if val_labels is not None and int(val_labels.max()) >= num_classes:
        raise UserError(f"val labels reach {int(val_labels.max())} but the training codes have {num_classes} classes")
    return train_set, val_codes, val_labels, state, num_classes


class WeightEMA:
    """Exponential moving average of a model's weights, the prior that evaluation and sampling use.

        theta_ema <- d * theta_ema + (1 - d) * theta,    d = min(decay, (1 + t) / (10 + t))

    after every optimizer step t; the warm-up of d keeps the random initial weights from
    dominating the average early on. Averaging the last ~1/(1-d) steps' weights smooths out the
    noise of small-batch SGD, which on a few thousand training grids is most of the overfitting.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - d)


def corrupt(x: torch.Tensor, fraction: float, pool: torch.Tensor, seed: int, step: int, rank: int) -> torch.Tensor:
    """``x`` with each code replaced, with probability ``fraction``, by a random code of ``pool``.

    A code drawn from the pool follows the training codes' marginal, a plausible wrong code
    like a sampling error. Drawn from a generator seeded by (seed, step, rank), so a resumed
    run sees the same inputs.
    """
    if fraction <= 0:
        return x
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)
    replace = torch.rand(x.shape, generator=gen) < fraction
    drawn = pool.flatten()[torch.randint(pool.numel(), x.shape, generator=gen).to(pool.device)]
    return torch.where(replace.to(x.device), drawn, x)


def train(config: Config, run_dir: str | os.PathLike, resume: bool = False) -> dict:
    """Train (or with ``resume`` continue) the prior of ``run_dir``; returns the summary it writes.

    ``config`` comes from ``data.rundir.resolve_config``; continuing a finished prior with a
    larger ``stage2.steps`` trains the extra steps (the cosine schedule stretched to the new total).
    """
    run_dir = Path(run_dir)
    settings = config.stage2
    train_set, val_codes, val_labels, state, num_classes = load_inputs(run_dir, settings, resume)
    info = train_set.info
    paths = RunPaths(run_dir)

    accelerator = make_accelerator(settings.mixed_precision, config.run.device)
    main_process = accelerator.is_main_process
    seed_everything(config.run.seed)
    batches = StepBatches(len(train_set), settings.batch_size, config.run.seed, accelerator.process_index,
                          accelerator.num_processes)  # checks the batch fits the data before anything is written
    model = build_prior(info.num_embeddings, settings.model_config(), num_classes, info.grid)
    optimizer = build_optimizer(model, settings.lr, settings.weight_decay)
    start, train_time = 0, 0.0
    if state is not None:
        load_weights(model, state["model"], paths.stage2_checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        start, train_time = state["step"], logged_time(paths.stage2_metrics, state["step"])
        restore_rng(state["rng"])
        warn_if_threads_differ(state.get("environment"), "stage 2")
    if main_process:
        commit_config(run_dir, config)  # the run has begun: codes read, model built
    marginal = marginal_log_probs(train_set.codes, info.num_embeddings, settings.marginal_smoothing)
    ema = WeightEMA(model, settings.ema_decay) if settings.ema_decay > 0 else None
    if ema is not None and state is not None and "ema" in state:
        load_weights(ema.model, state["ema"], paths.stage2_checkpoint)
    evaluated = ema.model if ema is not None else model  # the prior that is evaluated, saved and sampled
    forward = torch.compile(model) if settings.compile else model
    forward, optimizer = accelerator.prepare(forward, optimizer)
    environment = run_environment(accelerator)

    device = accelerator.device
    codes = train_set.codes.to(device)
    labels = train_set.labels.to(device) if num_classes else None
    log = MetricsLog(paths.stage2_metrics, resume_step=start if state is not None else None) if main_process else None

    def checkpoint(step: int) -> None:
        extra = {"ema": ema.model.state_dict()} if ema is not None else {}
        save_checkpoint(paths.stage2_checkpoint, "stage2", model=model.state_dict(), **extra,
                        architecture=model.architecture, model_config=asdict(model.config), optimizer=optimizer.state_dict(), step=step,
                        rng=capture_rng(), num_embeddings=info.num_embeddings, grid=list(info.grid),
                        num_classes=num_classes, stage1_checkpoint_sha256=info.stage1_checkpoint_sha256,
                        marginal_log_probs=marginal, config=config.to_dict(), environment=environment)
    val_bits = None
    model.train()
    steps = settings.total_steps(len(train_set))  # stage2.steps, or more for stage2.min_epochs
    bar = tqdm(total=steps, initial=start, desc="stage 2", unit="step", disable=not main_process)
    for step in range(start, steps):
        tick = time.perf_counter()
        lr = settings.lr * float(cosine_lr(step, steps, settings.warmup_steps, settings.lr_schedule))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = batches(step).to(device)
        x = codes[index]
        context = corrupt(x, settings.context_noise, codes, config.run.seed, step, accelerator.process_index)
        loss = F.cross_entropy(forward(context, labels[index] if labels is not None else None).float(), x)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if settings.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model, step)
        train_time += time.perf_counter() - tick
        bar.update()
        done = step + 1
        last = done == steps
        if done % settings.log_every == 0 or done % settings.eval_every == 0 or last:
            record = {"step": done, "train_bits_per_code": loss.item() / math.log(2), "lr": lr,
                      "train_time_s": round(train_time, 3)}
            if done % settings.eval_every == 0 or last:
                val_bits = bits_per_code(evaluated, val_codes, val_labels)
                record["val_bits_per_code"] = val_bits
            if main_process:
                log.log(record)
                bar.set_postfix(bits=f"{record['train_bits_per_code']:.3f}")
        if main_process and (done % settings.checkpoint_every == 0 or last):
            checkpoint(done)
    bar.close()

    if val_bits is None:  # nothing left to train (resumed a finished run)
        val_bits = bits_per_code(evaluated, val_codes, val_labels)
    summary = {"steps": steps, "final_val_bits_per_code": val_bits, "train_time_s": round(train_time, 3),
               "grids_per_s": round(steps * settings.batch_size * accelerator.num_processes / max(train_time, 1e-9), 2),
               "parameters": sum(p.numel() for p in model.parameters()), "num_embeddings": info.num_embeddings,
               "grid": list(info.grid), "num_classes": num_classes, **environment}
    if main_process:
        write_json(paths.stage2_summary, summary)
    return summary
