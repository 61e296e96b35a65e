"""The config schema: one dataclass per YAML section, and its validator.

A config is plain data. ``from_dict`` checks every key and type of a mapping against the
dataclasses below (their field metadata gives choices and ranges); an unknown key or a bad value
is a ``UserError`` naming the key and suggesting the closest valid one. Reading YAML files and
applying ``KEY=VALUE`` overrides is ``data.config_files``.

The models' own settings are dataclasses too, as nanoGPT has ``GPT(GPTConfig)``:
``VQVAEConfig`` builds ``stage1_vqvae.VQVAE`` and ``PixelCNNConfig`` builds
``stage2_prior.GatedPixelCNN``. The stage sections extend them with their training settings,
so the YAML keys stay flat (``stage1.num_embeddings``, ``stage1.steps``), each default is
written once, and checkpoints store ``asdict`` of the model config. ``configs/default.yaml``
states exactly these defaults (a test checks it). How a run directory's config is resolved
on resume lives in ``data.rundir``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from .errors import UserError

DATASETS = ("fashion_mnist_embedded", "fashion_mnist", "mnist", "cifar10", "image_folder")
PRECISIONS = ("auto", "no", "bf16", "fp16")
LIKELIHOODS = ("gaussian", "logistic")
MAX_SEED = 2**32 - 1  # derived seeds (seed * 1_000_003 + epoch, ...) stay far inside torch's 64-bit range


def choice(default, options):
    """A field whose value must be one of ``options``."""
    return field(default=default, metadata={"choices": tuple(options)})


def positive(default):
    return field(default=default, metadata={"min": 1})


def between(default, lo, hi):
    """A number in the closed range [lo, hi]."""
    return field(default=default, metadata={"min": lo, "max": hi})


def above(default, lo):
    """A number strictly greater than ``lo`` (learning rates: finite and > 0)."""
    return field(default=default, metadata={"above": lo})


@dataclass
class DataConfig:
    dataset: str = choice("fashion_mnist_embedded", DATASETS)
    root: str = "datasets"  # torchvision download folder, or the image folder itself
    download: bool = True  # torchvision datasets: fetch when missing (needs internet)
    image_size: Optional[int] = between(None, 8, 4096)  # None = the dataset's native size (image_folder: 32)
    channels: Optional[int] = choice(None, (None, 1, 3))  # None = native; 1 = grayscale, 3 = RGB
    val_fraction: float = between(0.1, 0.01, 0.9)  # held-out share for datasets without an official split
    cache_dir: Optional[str] = None  # where image folders are decoded to; None = ~/.cache/vqprior
    workers: Optional[int] = between(None, 1, 1024)  # processes that decode an image folder; None = all cores


@dataclass
class VQVAEConfig:
    """The VQ-VAE's architecture and quantiser (``stage1_vqvae.VQVAE(config, in_channels)``)."""
    num_embeddings: int = between(512, 2, 2**20)  # K
    embedding_dim: int = positive(64)  # D
    commitment_cost: float = between(0.25, 0.0, 100.0)  # beta
    decay: float = between(0.99, 0.0, 0.9999)  # 0 = codebook learned through its loss; > 0 = EMA updates
    epsilon: float = between(1e-5, 0.0, 1.0)  # Laplace smoothing of the EMA cluster sizes
    codebook_init: str = choice("kmeans", ("uniform", "random", "kmeans"))
    dead_code_steps: int = between(20, 0, 10**9)  # re-seed codes unused this many steps; 0 = never
    hidden: int = positive(64)
    residual_hidden: int = positive(32)
    residual_layers: int = between(2, 0, 64)  # residual blocks in the decoder
    # Residual blocks in the encoder. Each adds 8 pixels (at 2 downsamplings) to what one code
    # sees; with 0 a code describes only its neighbourhood, so plain background always gets the
    # same code and the grids are far more predictable for the prior (see README, design notes).
    encoder_residual_layers: int = between(0, 0, 64)
    downsamples: int = between(2, 1, 8)  # stride-2 convs: 28x28 -> 7x7 with 2
    # The decoder's likelihood of 8-bit pixels (stage1_vqvae.likelihood): "gaussian" trains on MSE and
    # fits one scale per channel afterwards; "logistic" outputs a mean and a log-scale per sub-pixel
    # and trains on the discretised-logistic NLL (PixelCNN++).
    likelihood: str = choice("gaussian", LIKELIHOODS)


@dataclass
class Stage1Config(VQVAEConfig):
    batch_size: int = positive(128)
    steps: int = positive(700)  # joint steps: encoder, codebook and decoder
    lr: float = above(1e-3, 0.0)
    lr_schedule: str = choice("constant", ("cosine", "constant"))  # cosine: decays to 0 at the last step
    # After `steps`, this many more steps train the decoder alone on frozen codes (encoder and
    # codebook fixed): sharper reconstructions from codes exactly as predictable for the prior.
    # Fewer joint steps make codes easier to predict; these steps win the NMSE back (docs/results.md).
    decoder_steps: int = between(700, 0, 10**9)
    log_every: int = positive(50)
    eval_every: int = positive(500)
    checkpoint_every: int = positive(250)
    mixed_precision: str = choice("auto", PRECISIONS)  # auto = bf16 on GPU, off on CPU
    compile: bool = False
    channels_last: bool = False

    def model_config(self) -> VQVAEConfig:
        return model_part(VQVAEConfig, self)


@dataclass
class PixelCNNConfig:
    """The gated PixelCNN's architecture (``stage2_prior.GatedPixelCNN(num_embeddings, config, num_classes)``)."""
    hidden: int = positive(64)
    layers: int = positive(8)  # receptive field: kernel_size // 2 * layers positions up, left and right
    kernel_size: int = field(default=3, metadata={"min": 3, "odd": True})
    dropout: float = between(0.1, 0.0, 0.9)


@dataclass
class Stage2Config(PixelCNNConfig):
    # Defaults: the gated PixelCNN sized for ~3.5 minutes on a 2-core CPU on 9,000 7x7 grids (K=512).
    conditional: bool = False  # class-conditional prior (needs labels)
    batch_size: int = positive(32)
    steps: int = positive(3000)
    # At least this many passes over the training grids: the prior trains
    # max(steps, ceil(min_epochs * N / batch_size)) steps, so a large image folder is not left
    # under-trained by a step count sized for 9,000 grids: on 54,000 grids 6 passes instead of 3
    # take the prior from 2.63 to 2.55 bits per code (docs/results.md, "Large data").
    min_epochs: float = between(6.0, 0.0, 1e4)
    lr: float = above(5e-3, 0.0)
    weight_decay: float = between(0.1, 0.0, 1e3)  # AdamW, on weight matrices and embeddings only
    lr_schedule: str = choice("cosine", ("cosine", "constant"))
    warmup_steps: int = between(50, 0, 10**9)
    grad_clip: float = between(1.0, 0.0, 1e6)  # max global gradient norm; 0 = no clipping
    ema_decay: float = between(0.0, 0.0, 0.99999)  # moving average of the weights for eval and sampling; 0 = off
    # Training inputs only: this fraction of the context codes is replaced by codes drawn from
    # the training codes (the targets stay true), so the prior learns to recover from a wrong
    # code, as its own samples will hold. 0 = off.
    context_noise: float = between(0.0, 0.0, 0.9)
    marginal_smoothing: float = between(1.0, 0.0, 1e6)  # add-alpha smoothing of the marginal prior's code counts
    log_every: int = positive(50)
    eval_every: int = positive(250)
    checkpoint_every: int = positive(250)
    mixed_precision: str = choice("auto", PRECISIONS)
    compile: bool = False

    def model_config(self) -> PixelCNNConfig:
        return model_part(PixelCNNConfig, self)

    def total_steps(self, num_grids: int) -> int:
        """The steps the prior trains on ``num_grids`` training grids: ``steps``, or more for ``min_epochs``."""
        return max(self.steps, math.ceil(self.min_epochs * num_grids / self.batch_size))


@dataclass
class SampleConfig:
    n: int = positive(64)
    # Slightly below 1: on held-out Fréchet distances (20 draws; default data and flat folder, both seeds;
    # class folder; glyphs) 0.97 beats 1.0 on every prior and 0.94 on four of five (fashion_mnist.yaml keeps
    # 1.0, where it is better). The bits per code are the model's own, at T = 1 (docs/results.md).
    temperature: float = between(0.97, 1e-3, 100.0)
    top_k: Optional[int] = positive(None)  # sample among the k most likely codes only
    top_p: Optional[float] = field(default=None, metadata={"above": 0.0, "max": 1.0})  # nucleus sampling
    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.85, 0.97, 1.0, 1.15],  # report sweep
                                      metadata={"min": 1e-3, "max": 100.0})
    fd_samples: int = between(1000, 2, 10**7)  # generated images per prior for the Frechet distance
    # Independent sets of fd_samples from the learned prior at `temperature`, whose FDs are averaged:
    # one set of 1,000 moves fd_learned by 10-25%, the mean of 5 still by about 7% (docs/results.md);
    # the floor has no such noise. 20 cost the default run about 17 s.
    fd_draws: int = between(20, 1, 100)
    classifier_steps: int = positive(600)  # training steps of the feature classifier
    # Its own seed, not run.seed, so that runs of one dataset with other seeds share one feature space:
    # on an unlabelled folder the classifier's seed alone moves an fd ratio 1.5x-2.3x (docs/results.md).
    classifier_seed: int = between(0, 0, MAX_SEED)
    # Inception FID beside the classifier FD (needs the `fid` extra); auto = on with a GPU, off on CPU
    inception_fid: Union[bool, str] = choice("auto", ("auto", True, False))


@dataclass
class RunConfig:
    seed: int = between(0, 0, MAX_SEED)
    dir: Optional[str] = None  # None = a fresh folder under runs/
    device: str = choice("auto", ("auto", "cpu", "cuda"))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sample: SampleConfig = field(default_factory=SampleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_part(cls, settings):
    """The ``cls`` fields of a stage section (which extends ``cls``), as a ``cls`` instance."""
    return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


def model_from_dict(cls, raw: dict, what: str):
    """Rebuild a model config saved with ``asdict`` (a checkpoint's), validated like the YAML."""
    if not isinstance(raw, dict):
        raise UserError(f"{what} holds no model configuration")
    return _build(cls, raw, prefix=f"{what}: ")


def from_dict(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise UserError("config must be a mapping of sections (data, stage1, stage2, sample, run)")
    return _build(Config, raw, prefix="")


def _build(cls, raw: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise UserError(f"unknown config key '{prefix}{key}'{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            sub = raw[name] if raw[name] is not None else {}
            if not isinstance(sub, dict):
                raise UserError(f"config section '{prefix}{name}' must be a mapping")
            values[name] = _build(typ, sub, prefix=f"{prefix}{name}.")
        else:
            values[name] = _check_value(f"{prefix}{name}", raw[name], typ, f.metadata)
    return cls(**values)


def _check_value(key: str, value: Any, typ, meta) -> Any:
    optional = typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in typing.get_args(typ)
    if optional:
        if value is None:
            return None
        typ = next(a for a in typing.get_args(typ) if a is not type(None))
    if typing.get_origin(typ) is list:  # a list: check every element against the element type and range
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        (element,) = typing.get_args(typ)
        return [_check_value(f"{key}[{i}]", v, element, meta) for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(typ, True)
    if not ok:
        name = getattr(typ, "__name__", str(typ))
        raise UserError(f"config key '{key}' must be {name}{' or null' if optional else ''}, got {value!r}")
    if typ is float:
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"config key '{key}' must be a finite number, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"config key '{key}' must be one of {', '.join(map(yaml_text, meta['choices']))}, "
                        f"got {value!r}{hint}")
    if "min" in meta and value < meta["min"]:
        raise UserError(f"config key '{key}' must be at least {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"config key '{key}' must be at most {meta['max']}, got {value!r}")
    if "above" in meta and not value > meta["above"]:
        raise UserError(f"config key '{key}' must be greater than {meta['above']}, got {value!r}")
    if meta.get("odd") and value % 2 == 0:
        raise UserError(f"config key '{key}' must be odd, got {value!r}")
    return value


def yaml_text(value) -> str:
    """A choice as YAML spells it (true, false, null)."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
