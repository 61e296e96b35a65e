"""Stage-2 training: fit the gated PixelCNN to the training codes by maximum likelihood.

    loss = -1 / (B H W) * sum_{b, i, j} ln p(z^b_ij | z^b_<ij)        (nats, cross-entropy)

logged as bits per code (loss / ln 2) next to the same quantity on the val codes. AdamW
(weight decay on weight matrices only, as in nanoGPT), linear warm-up then cosine decay,
dropout inside the gated layers, optional gradient clipping. Runs through ``accelerate``:
bf16 on a GPU, several GPUs under ``accelerate launch``.

Resuming is exact on the CPU: the checkpoint holds model, optimizer, step and every RNG,
batches are a function of the step (``data.training.StepBatches``) and the learning rate
a function of the step, so a killed run resumed with ``--resume`` ends with the weights
of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.codes import CodeDataset, load_codes
from data.config import Config, load_config, save_config
from data.errors import UserError
from data.io import MetricsLog, capture_rng, restore_rng, save_checkpoint, write_json
from data.training import StepBatches, cosine_lr, make_accelerator, prepare_run_dir, seed_everything

from .baselines import marginal_log_probs
from .evaluate import bits_per_code
from .pixelcnn import GatedPixelCNN, load_prior_checkpoint


def resolve_config(run_dir: Path, config_file: Optional[str], overrides: list[str]) -> Config:
    """DIR/config.yaml (written by stage 1) as the base, then ``--config FILE``, then ``--set``."""
    saved = run_dir / "config.yaml"
    base = load_config(saved).to_dict() if saved.is_file() else None
    return load_config(config_file, overrides, base=base)


def load_training_codes(run_dir: Path, conditional: bool):
    """The train codes as a CodeDataset and the val codes (from the same stage-1 checkpoint), validated."""
    train = CodeDataset(run_dir / "codes" / "train.h5")
    info = train.info
    val_codes, val_labels, _ = load_codes(run_dir / "codes" / "val.h5", num_embeddings=info.num_embeddings,
                                          grid=info.grid, stage1_checkpoint_sha256=info.stage1_checkpoint_sha256)
    if conditional and (train.labels is None or val_labels is None):
        raise UserError(f"stage2.conditional is true but the codes in {run_dir / 'codes'} have no labels; "
                        "set stage2.conditional=false or use a labelled dataset")
    return train, val_codes, (val_labels if conditional else None)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW decaying the weight matrices and embeddings (ndim >= 2), not biases."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def check_resumable(state: dict, model_config: dict, info) -> None:
    """The checkpoint must come from these codes and this model configuration."""
    trained_on = (state["num_embeddings"], tuple(state["grid"]), state["stage1_checkpoint_sha256"])
    if trained_on != (info.num_embeddings, info.grid, info.stage1_checkpoint_sha256):
        raise UserError(f"the codes in {info.path.parent} (K={info.num_embeddings}, {info.grid[0]}x{info.grid[1]}) "
                        f"are not those the stage-2 checkpoint was trained on (K={state['num_embeddings']}, "
                        f"{state['grid'][0]}x{state['grid'][1]}, or another stage-1 checkpoint); "
                        "train stage 2 afresh in a new run")
    if state["model_config"] != model_config:
        raise UserError(f"the stage-2 checkpoint's model ({state['model_config']}) differs from the config's "
                        f"({model_config}); resume with the original stage2 settings or start a new run")


def load_inputs(run_dir: Path, cfg, resume: bool):
    """Validated codes, the checkpoint to resume from (or None) and the model's constructor arguments."""
    train_set, val_codes, val_labels = load_training_codes(run_dir, cfg.conditional)
    info = train_set.info
    checkpoint_path = run_dir / "stage2" / "checkpoint.pt"
    prepare_run_dir(run_dir, checkpoint_path.parent, resume)
    state = load_prior_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None
    if resume and state is None:
        print(f"no checkpoint at {checkpoint_path} yet: starting stage 2 from step 0")
    num_classes = int(train_set.labels.max()) + 1 if cfg.conditional else 0
    if state is not None:
        num_classes = state["num_classes"]
    if val_labels is not None and int(val_labels.max()) >= num_classes:
        raise UserError(f"val labels reach {int(val_labels.max())} but the training codes have {num_classes} classes")
    model_config = dict(num_embeddings=info.num_embeddings, hidden=cfg.hidden, layers=cfg.layers,
                        kernel_size=cfg.kernel_size, num_classes=num_classes, dropout=cfg.dropout)
    if state is not None:
        check_resumable(state, model_config, info)
    return train_set, val_codes, val_labels, state, model_config


def train(run_dir: str | os.PathLike, config_file: Optional[str] = None, overrides: list[str] = (),
          resume: bool = False) -> dict:
    """Train (or with ``resume`` continue) the prior of ``run_dir``; returns the summary it writes."""
    run_dir = Path(run_dir)
    config = resolve_config(run_dir, config_file, list(overrides))
    cfg = config.stage2
    if cfg.kernel_size < 3 or cfg.kernel_size % 2 == 0:
        raise UserError(f"stage2.kernel_size must be odd and at least 3, got {cfg.kernel_size}")
    train_set, val_codes, val_labels, state, model_config = load_inputs(run_dir, cfg, resume)
    info, num_classes = train_set.info, model_config["num_classes"]
    out = run_dir / "stage2"

    accelerator = make_accelerator(cfg.mixed_precision, config.run.device)
    main_process = accelerator.is_main_process
    seed_everything(config.run.seed)
    model = GatedPixelCNN(**model_config)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    start, train_time = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, train_time = state["step"], state["train_time_s"]
        restore_rng(state["rng"])
    if main_process:
        save_config(config, run_dir / "config.yaml")
    marginal = marginal_log_probs(train_set.codes, info.num_embeddings, cfg.marginal_smoothing)
    forward = torch.compile(model) if cfg.compile else model
    forward, optimizer = accelerator.prepare(forward, optimizer)

    device = accelerator.device
    codes = train_set.codes.to(device)
    labels = train_set.labels.to(device) if num_classes else None
    batches = StepBatches(len(codes), cfg.batch_size, config.run.seed, accelerator.process_index,
                          accelerator.num_processes)
    log = MetricsLog(out / "metrics.jsonl", resume_step=start if state is not None else None) if main_process else None

    def checkpoint(step: int) -> None:
        save_checkpoint({
            "model": model.state_dict(), "model_config": model_config, "optimizer": optimizer.state_dict(),
            "step": step, "rng": capture_rng(), "num_embeddings": info.num_embeddings, "grid": list(info.grid),
            "num_classes": num_classes, "stage1_checkpoint_sha256": info.stage1_checkpoint_sha256,
            "marginal_log_probs": marginal, "config": config.to_dict(), "train_time_s": train_time,
        }, out / "checkpoint.pt")

    val_bits = None
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="stage 2", unit="step", disable=not main_process)
    for step in range(start, cfg.steps):
        tick = time.perf_counter()
        lr = cfg.lr * float(cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr_schedule))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = batches(step).to(device)
        x = codes[index]
        loss = F.cross_entropy(forward(x, labels[index] if labels is not None else None).float(), x)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        train_time += time.perf_counter() - tick
        bar.update()
        done = step + 1
        last = done == cfg.steps
        if done % cfg.log_every == 0 or done % cfg.eval_every == 0 or last:
            record = {"step": done, "train_bits_per_code": loss.item() / math.log(2), "lr": lr}
            if done % cfg.eval_every == 0 or last:
                val_bits = bits_per_code(model, val_codes, val_labels)
                record["val_bits_per_code"] = val_bits
            if main_process:
                log.log(record)
                bar.set_postfix(bits=f"{record['train_bits_per_code']:.3f}")
        if main_process and (done % cfg.checkpoint_every == 0 or last):
            checkpoint(done)
    bar.close()

    if val_bits is None:  # nothing left to train (resumed a finished run)
        val_bits = bits_per_code(model, val_codes, val_labels)
    summary = {"steps": cfg.steps, "final_val_bits_per_code": val_bits, "train_time_s": round(train_time, 3),
               "grids_per_s": round(cfg.steps * cfg.batch_size * accelerator.num_processes / max(train_time, 1e-9), 2),
               "parameters": sum(p.numel() for p in model.parameters()), "num_embeddings": info.num_embeddings,
               "grid": list(info.grid), "num_classes": num_classes}
    if main_process:
        write_json(out / "summary.json", summary)
    return summary
