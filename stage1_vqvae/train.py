"""Stage-1 training loop: reconstruction MSE / data variance + VQ loss, with accelerate.

Reads straight through: build data and model, restore a checkpoint if resuming, then one
optimizer update per step on a step-indexed batch, logging, periodic atomic checkpoints,
and a final validation pass that writes ``summary.json`` and ``reconstructions.png``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import Config, load_split, to_model_range
from data.datasets import data_variance, save_image_grid
from data.checkpoint import load_checkpoint, load_weights, save_checkpoint
from data.errors import UserError
from data.io import MetricsLog, capture_rng, restore_rng, write_json
from data.rundir import commit_config
from data.training import StepBatches, make_accelerator, run_environment, seed_everything, warn_if_threads_differ

from .model import VQVAE

RESUME_KEYS = ("in_channels", "optimizer", "step", "rng")


def build_model(config: Config, in_channels: int) -> VQVAE:
    return VQVAE(config.stage1.model_config(), in_channels)


def check_image_size(config: Config, shape: tuple[int, ...]) -> None:
    factor = 2 ** config.stage1.downsamples
    if shape[-1] % factor or shape[-2] % factor:
        raise UserError(f"images of {shape[-2]}x{shape[-1]} are not divisible by 2^stage1.downsamples = {factor}; "
                        "change data.image_size or stage1.downsamples")


def train(config: Config, run_dir: Path, resume: bool = False) -> dict:
    """Train (or resume) stage 1 in ``run_dir/stage1``; returns the final summary."""
    s = config.stage1
    out = run_dir / "stage1"
    ckpt_path = out / "checkpoint.pt"
    accelerator = make_accelerator(s.mixed_precision, config.run.device)
    seed_everything(config.run.seed)

    train_set, val_set = load_split(config.data, "train"), load_split(config.data, "val")
    check_image_size(config, train_set.images.shape)
    variance = data_variance(train_set.images)
    model = build_model(config, train_set.images.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)

    step = 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, "stage1", RESUME_KEYS)
        if state["model_config"] != asdict(model.config) or state["in_channels"] != model.in_channels:
            raise UserError(f"{ckpt_path} holds a model built with other stage1 settings than this config's; "
                            "resume with the run's own config.yaml or start a new --run")
        load_weights(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rng(state["rng"])
        warn_if_threads_differ(state.get("environment"), "stage 1")
    if accelerator.is_main_process:
        commit_config(run_dir, config)  # the run has begun: data loaded, model built
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume else None) \
        if accelerator.is_main_process else None

    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, optimizer)
    environment = run_environment(accelerator)
    forward = torch.compile(model) if s.compile else model
    images = train_set.images.to(accelerator.device)  # uint8: the whole set lives on the device
    batches = StepBatches(len(images), s.batch_size, config.run.seed,
                          accelerator.process_index, accelerator.num_processes)

    def save(at_step: int) -> None:
        if accelerator.is_main_process:
            net = accelerator.unwrap_model(model)
            save_checkpoint(ckpt_path, "stage1", model=net.state_dict(), model_config=asdict(net.config),
                            in_channels=net.in_channels, optimizer=optimizer.state_dict(), step=at_step,
                            rng=capture_rng(), data_variance=variance, image_shape=list(train_set.images.shape[1:]),
                            dataset=config.data.dataset, class_names=list(train_set.class_names or []),
                            config=config.to_dict(), environment=environment)

    model.train()
    bar = tqdm(total=s.steps, initial=step, desc="stage 1", disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    tic, seen = time.perf_counter(), 0
    while step < s.steps:
        x = to_model_range(images[batches(step)])
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out_ = forward(x)
        recon_nmse = F.mse_loss(out_.reconstruction.float(), x) / variance
        loss = recon_nmse + out_.vq.loss
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        step += 1
        seen += x.shape[0] * accelerator.num_processes
        bar.update(1)

        if step % s.log_every == 0 or step == s.steps:
            row = {"step": step, "loss": loss.item(), "recon_nmse": recon_nmse.item(),
                   "vq_loss": out_.vq.loss.item(), "perplexity": out_.vq.perplexity.item(),
                   "codes_used": int(out_.vq.codes_used), "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": seen / (time.perf_counter() - tic)}
            if not math.isfinite(row["loss"]):
                raise RuntimeError(f"stage-1 loss is {row['loss']} at step {step}; lower stage1.lr")
            if step % s.eval_every == 0 or step == s.steps:
                row.update({f"val_{k}": v for k, v in evaluate(model, val_set.images, variance,
                                                               accelerator.device).items() if k != "code_counts"})
                model.train()
            if log:
                log.log(row)
            bar.set_postfix(nmse=f"{row['recon_nmse']:.4f}", ppl=f"{row['perplexity']:.0f}")
        if step % s.checkpoint_every == 0 or step == s.steps:
            save(step)
    bar.close()
    train_seconds = time.perf_counter() - tic

    summary = finish(accelerator.unwrap_model(model), val_set.images, variance, out, accelerator.device,
                     write=accelerator.is_main_process)
    summary.update(steps=s.steps, train_seconds=train_seconds,
                   images_per_s=seen / train_seconds if seen else None,
                   class_names=list(train_set.class_names) if train_set.class_names else None, **environment)
    if accelerator.is_main_process:
        write_json(out / "summary.json", summary)
    return summary


@torch.no_grad()
def evaluate(model, images: torch.Tensor, variance: float, device, batch_size: int = 500) -> dict:
    """Validation NMSE, perplexity and code usage over a whole uint8 image set (eval mode: no updates)."""
    model.eval()
    net = model.module if hasattr(model, "module") else model
    k = net.num_embeddings
    counts = torch.zeros(k, dtype=torch.long)
    sq_err, n = 0.0, 0
    for batch in images.split(batch_size):
        x = to_model_range(batch.to(device))
        out = net(x)
        sq_err += F.mse_loss(out.reconstruction.float(), x, reduction="sum").item()
        n += x.numel()
        counts += torch.bincount(out.vq.indices.flatten().cpu(), minlength=k)
    probs = counts.double() / counts.sum()
    perplexity = torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum()).item()
    return {"recon_nmse": sq_err / n / variance, "perplexity": perplexity,
            "codes_used": int((counts > 0).sum()), "code_counts": counts.tolist()}


def finish(model: VQVAE, val_images: torch.Tensor, variance: float, out: Path, device, write: bool = True) -> dict:
    """Final validation metrics and the originals-above-reconstructions picture."""
    metrics = evaluate(model, val_images, variance, device)
    if write:
        x = to_model_range(val_images[:32].to(device))
        save_image_grid(torch.cat([x, model.decode(model.encode(x))]), out / "reconstructions.png", nrow=16)
    return {"val_recon_nmse": metrics["recon_nmse"], "perplexity": metrics["perplexity"],
            "codes_used": metrics["codes_used"], "num_embeddings": model.num_embeddings,
            "code_counts": metrics["code_counts"]}
