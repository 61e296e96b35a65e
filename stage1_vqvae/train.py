"""Stage-1 training loop: reconstruction term + VQ loss, with accelerate.

The reconstruction term depends on ``stage1.likelihood``: ``gaussian`` minimises the MSE
divided by the data variance (NMSE: 1 = no better than the data's mean); ``logistic``
minimises the discretised-logistic NLL per sub-pixel divided by that of a Gaussian with the
data's variance (``likelihood.reference_nats``: 1 = no better than the data's spread), so
both train at a comparable loss scale.

Reads straight through: build data and model, restore a checkpoint if resuming, then one
optimizer update per step on a step-indexed batch, logging, periodic atomic checkpoints,
fitting the Gaussian pixel scale (``VQVAE.fit_pixel_scale``) into the final checkpoint, and a
final validation pass that writes ``summary.json`` and ``reconstructions.png``. Reported NMSE
is that of the clamped means, the images ``decode`` returns, for either likelihood.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data import Config, load_split, to_model_range
from data.datasets import data_variance, on_device, save_image_grid
from data.checkpoint import load_checkpoint, load_weights, save_checkpoint
from data.errors import Fix, RunConflict, UserError
from data.io import MetricsLog, capture_rng, logged_time, restore_rng, write_json
from data.rundir import RunPaths, commit_config
from data.training import (StepBatches, cosine_lr, make_accelerator, replicas_agree, run_environment, seed_everything,
                           warn_if_threads_differ)

from .likelihood import discretized_log_prob, reference_nats
from .model import VQVAE, VQVAEOutput

RESUME_KEYS = ("in_channels", "optimizer", "step", "rng")


def build_model(config: Config, in_channels: int) -> VQVAE:
    return VQVAE(config.stage1.model_config(), in_channels)


def check_image_size(config: Config, shape: tuple[int, ...]) -> None:
    factor = 2 ** config.stage1.downsamples
    if shape[-1] % factor or shape[-2] % factor:
        raise UserError(f"images of {shape[-2]}x{shape[-1]} are not divisible by 2^stage1.downsamples = {factor}; "
                        "change data.image_size or stage1.downsamples")


def train(config: Config, run_dir: Path, resume: bool = False) -> dict:
    """Train (or resume) stage 1 in the run's stage-1 folder; returns the final summary."""
    s = config.stage1
    paths = RunPaths(run_dir)
    ckpt_path = paths.stage1_checkpoint
    accelerator = make_accelerator(s.mixed_precision, config.run.device)
    seed_everything(config.run.seed)

    train_set, val_set = load_split(config.data, "train"), load_split(config.data, "val")
    check_image_size(config, train_set.images.shape)
    batches = StepBatches(len(train_set), s.batch_size, config.run.seed,
                          accelerator.process_index, accelerator.num_processes)  # checks the batch fits the data
    variance = data_variance(train_set.images)
    model = build_model(config, train_set.images.shape[1])
    optimizer = build_optimizer(model, s.lr)
    total = s.steps + s.decoder_steps

    step = 0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, "stage1", RESUME_KEYS)
        if state["model_config"] != asdict(model.config) or state["in_channels"] != model.in_channels:
            raise RunConflict(f"{ckpt_path} holds a model built with other stage1 settings than this config's",
                              path=ckpt_path, advice="resume with the run's own saved config", fix=Fix.NEW_RUN)
        load_weights(model, state["model"], ckpt_path)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. another layout of parameter groups
            raise RunConflict(f"{ckpt_path} holds an optimizer state that does not fit this model ({exc})",
                              path=ckpt_path, fix=Fix.NEW_RUN) from None
        step = state["step"]
        restore_rng(state["rng"])
        warn_if_threads_differ(state.get("environment"), "stage 1")
        if step >= total and paths.stage1_summary.is_file():  # complete: nothing to redo or rewrite
            return json.loads(paths.stage1_summary.read_text())
    if accelerator.is_main_process:
        commit_config(run_dir, config)  # the run has begun: data loaded, model built
    log = MetricsLog(paths.stage1_metrics, resume_step=step if resume else None) \
        if accelerator.is_main_process else None

    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, optimizer)
    environment = run_environment(accelerator)
    forward = torch.compile(model) if s.compile else model
    images = on_device(train_set.images, accelerator.device)  # uint8: in memory on the device, or read from disk

    def save(at_step: int) -> None:
        if accelerator.is_main_process:
            net = accelerator.unwrap_model(model)
            save_checkpoint(ckpt_path, "stage1", model=net.state_dict(), model_config=asdict(net.config),
                            in_channels=net.in_channels, optimizer=optimizer.state_dict(), step=at_step,
                            rng=capture_rng(), data_variance=variance, image_shape=list(train_set.images.shape[1:]),
                            dataset=config.data.dataset, class_names=list(train_set.class_names or []),
                            config=config.to_dict(), environment=environment)

    model.train()
    bar = tqdm(total=total, initial=step, desc="stage 1", disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    tic, seen = time.perf_counter(), 0
    earlier = logged_time(paths.stage1_metrics, step) if step else 0.0  # training seconds before a resume
    while step < total:
        set_phase(accelerator.unwrap_model(model), optimizer, step, s)
        x = to_model_range(images[batches(step)].to(accelerator.device))
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out_ = forward(x)
        recon = reconstruction_loss(out_, x, variance, s.likelihood)
        loss = recon + out_.vq.loss
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        step += 1
        seen += x.shape[0] * accelerator.num_processes
        bar.update(1)

        if step % s.log_every == 0 or step == total:
            row = {"step": step, "loss": loss.item(), "recon_loss": recon.item(),
                   "recon_nmse": clamped_nmse(out_.reconstruction.detach(), x, variance),
                   "vq_loss": out_.vq.loss.item(), "perplexity": out_.vq.perplexity.item(),
                   "codes_used": int(out_.vq.codes_used), "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": seen / (time.perf_counter() - tic),
                   "train_time_s": round(earlier + time.perf_counter() - tic, 3)}
            if not math.isfinite(row["loss"]):
                raise RuntimeError(f"stage-1 loss is {row['loss']} at step {step}; lower stage1.lr")
            if step % s.eval_every == 0 or step == total:
                row.update({f"val_{k}": v for k, v in evaluate(model, val_set.images, variance,
                                                               accelerator.device).items() if k != "code_counts"})
                model.train()
            if log:
                log.log(row)
            bar.set_postfix(nmse=f"{row['recon_nmse']:.4f}", ppl=f"{row['perplexity']:.0f}")
        if step % s.checkpoint_every == 0 or step == total:
            save(step)
    bar.close()
    train_seconds = earlier + time.perf_counter() - tic
    net = accelerator.unwrap_model(model)
    if not net.can_measure_distortion:  # a Gaussian decoder gets its pixel scale once, into the last checkpoint
        net.fit_pixel_scale(images)
        save(step)

    if not replicas_agree(net):  # DDP, all-reduced EMA statistics and broadcast re-seeds keep them identical
        raise RuntimeError("the processes ended stage 1 with different weights or codebooks; please report this bug")
    summary = finish(accelerator.unwrap_model(model), val_set.images, variance, paths, accelerator.device,
                     write=accelerator.is_main_process)
    summary.update(steps=s.steps, decoder_steps=s.decoder_steps, train_seconds=train_seconds,
                   parameters=sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
                   images_per_s=seen / (train_seconds - earlier) if seen else None,
                   class_names=list(train_set.class_names) if train_set.class_names else None, **environment)
    if accelerator.is_main_process:
        write_json(paths.stage1_summary, summary)
    return summary


def build_optimizer(model: VQVAE, lr: float) -> torch.optim.Adam:
    """Adam with two groups, the decoder's parameters and the rest, so that the decoder-only phase
    can stop the encoder and codebook (lr 0). Always two, whatever ``decoder_steps``: an interrupted
    run resumes under another ``decoder_steps`` with the same optimizer layout."""
    decoder = {id(p) for p in model.decoder.parameters()}
    return torch.optim.Adam([{"params": [p for p in model.parameters() if id(p) in decoder]},
                             {"params": [p for p in model.parameters() if id(p) not in decoder]}], lr=lr)


def set_phase(model: VQVAE, optimizer: torch.optim.Adam, step: int, s) -> None:
    """The learning rates of ``step``, and the decoder-only phase after ``s.steps``.

    Steps 0..steps-1 train everything (cosine or constant schedule over ``steps``). The
    ``decoder_steps`` after them train the decoder alone: the encoder and codebook get learning
    rate 0 (Adam then leaves them exactly as they are) and the quantizer stays in eval mode (no
    EMA or dead-code updates), so every image keeps its codes while the decoder learns to
    reconstruct from them, with its own schedule over the phase.
    """
    decoder_phase = step >= s.steps
    if decoder_phase:
        rate = s.lr * float(cosine_lr(step - s.steps, s.decoder_steps, 0, s.lr_schedule))
    else:
        rate = s.lr * float(cosine_lr(step, s.steps, 0, s.lr_schedule))
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = 0.0 if decoder_phase and i == 1 else rate
    model.quantizer.train(model.training and not decoder_phase)


def reconstruction_loss(out: VQVAEOutput, x: torch.Tensor, variance: float, likelihood: str) -> torch.Tensor:
    """The reconstruction term: MSE / variance, or the discretised-logistic NLL / ``reference_nats(variance)``.

    The NLL is -1/(B C H W) sum log P(x | mean, s) in nats over the batch's sub-pixels.
    """
    if likelihood == "logistic":
        nll = -discretized_log_prob(x, out.reconstruction.float(), out.log_scale.float(), "logistic").mean()
        return nll / reference_nats(variance)
    return F.mse_loss(out.reconstruction.float(), x) / variance


def clamped_nmse(reconstruction: torch.Tensor, x: torch.Tensor, variance: float) -> float:
    """NMSE of the reconstructions clamped to the data range (what ``decode`` returns)."""
    return (F.mse_loss(reconstruction.float().clamp(-0.5, 0.5), x) / variance).item()


@torch.no_grad()
def evaluate(model, images: torch.Tensor, variance: float, device, batch_size: int = 500) -> dict:
    """Validation NMSE (clamped), perplexity, code usage and distortion over a uint8 image set (eval mode).

    ``distortion_bits_per_dim`` is -log2 p(x | z_q(x)) / (C H W) averaged over the images, once
    the decoder's likelihood is defined (logistic, or Gaussian with a fitted scale).
    """
    model.eval()
    net = model.module if hasattr(model, "module") else model
    k = net.num_embeddings
    counts = torch.zeros(k, dtype=torch.long)
    sq_err, distortion, n = 0.0, 0.0, 0
    for batch in images.split(batch_size):
        x = to_model_range(batch.to(device))
        out = net(x)
        sq_err += F.mse_loss(out.reconstruction.float().clamp(-0.5, 0.5), x, reduction="sum").item()
        if net.can_measure_distortion:
            distortion += net.distortion_bits(x, out.vq.indices).sum().item()
        n += x.numel()
        counts += torch.bincount(out.vq.indices.flatten().cpu(), minlength=k)
    probs = counts.double() / counts.sum()
    perplexity = torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum()).item()
    result = {"recon_nmse": sq_err / n / variance, "perplexity": perplexity,
              "codes_used": int((counts > 0).sum()), "code_counts": counts.tolist()}
    if net.can_measure_distortion:
        result["distortion_bits_per_dim"] = distortion / n
    return result


def finish(model: VQVAE, val_images: torch.Tensor, variance: float, paths: RunPaths, device,
           write: bool = True) -> dict:
    """Final validation metrics and the originals-above-reconstructions picture."""
    metrics = evaluate(model, val_images, variance, device)
    if write:
        x = to_model_range(val_images[:32].to(device))
        save_image_grid(torch.cat([x, model.decode(model.encode(x))]), paths.reconstructions, nrow=16)
    return {"val_recon_nmse": metrics["recon_nmse"], "perplexity": metrics["perplexity"],
            "codes_used": metrics["codes_used"], "num_embeddings": model.num_embeddings,
            "code_counts": metrics["code_counts"], "likelihood": model.likelihood,
            "val_distortion_bits_per_dim": metrics.get("distortion_bits_per_dim"),
            "pixel_scale": model.pixel_log_scale.exp().tolist() if model.likelihood == "gaussian" else None}
