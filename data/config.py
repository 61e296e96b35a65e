"""The config schema: one dataclass per YAML section, validated on load.

A config is plain data. ``load_config`` reads a YAML file, applies ``--set`` overrides and
checks every key and type against the dataclasses below; an unknown key or a bad value is a
``UserError`` naming the key and suggesting the closest valid one. Every stage reads the
same resolved config, which is saved as ``DIR/config.yaml`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import UserError
from .io import write_text

DATASETS = ("fashion_mnist_embedded", "fashion_mnist", "mnist", "cifar10", "image_folder")
PRECISIONS = ("auto", "no", "bf16", "fp16")


def choice(default, options):
    """A field whose value must be one of ``options``."""
    return field(default=default, metadata={"choices": tuple(options)})


def positive(default):
    return field(default=default, metadata={"min": 1})


def between(default, lo, hi):
    """A number in the closed range [lo, hi]."""
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass
class DataConfig:
    dataset: str = choice("fashion_mnist_embedded", DATASETS)
    root: str = "datasets"  # torchvision download folder, or the image folder itself
    download: bool = True  # torchvision datasets: fetch when missing (needs internet)
    image_size: Optional[int] = None  # None = the dataset's native size (image_folder: 32)
    channels: Optional[int] = choice(None, (None, 1, 3))  # None = native; 1 = grayscale, 3 = RGB
    val_fraction: float = between(0.1, 0.01, 0.9)  # held-out share for datasets without an official split


@dataclass
class Stage1Config:
    num_embeddings: int = positive(512)  # K
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
    downsamples: int = positive(2)  # stride-2 convs: 28x28 -> 7x7 with 2
    batch_size: int = positive(128)
    steps: int = positive(800)
    lr: float = 1e-3
    log_every: int = positive(50)
    eval_every: int = positive(500)
    checkpoint_every: int = positive(250)
    mixed_precision: str = choice("auto", PRECISIONS)  # auto = bf16 on GPU, off on CPU
    compile: bool = False
    channels_last: bool = False


@dataclass
class Stage2Config:
    # Defaults: the gated PixelCNN sized for ~4 minutes on a 2-core CPU on 9,000 7x7 grids (K=512).
    hidden: int = positive(64)
    layers: int = positive(8)  # receptive field: kernel_size // 2 * layers positions up, left and right
    kernel_size: int = positive(3)  # odd, >= 3
    conditional: bool = False  # class-conditional prior (needs labels)
    dropout: float = between(0.1, 0.0, 0.9)
    batch_size: int = positive(32)
    steps: int = positive(1500)
    lr: float = 5e-3
    weight_decay: float = 0.1  # AdamW, on weight matrices and embeddings only
    lr_schedule: str = choice("cosine", ("cosine", "constant"))
    warmup_steps: int = 50
    grad_clip: float = between(1.0, 0.0, 1e6)  # max global gradient norm; 0 = no clipping
    marginal_smoothing: float = between(1.0, 0.0, 1e6)  # add-alpha smoothing of the marginal prior's code counts
    log_every: int = positive(50)
    eval_every: int = positive(250)
    checkpoint_every: int = positive(250)
    mixed_precision: str = choice("auto", PRECISIONS)
    compile: bool = False


@dataclass
class SampleConfig:
    n: int = positive(64)
    temperature: float = between(1.0, 1e-3, 100.0)
    top_k: Optional[int] = None
    temperatures: list = field(default_factory=lambda: [0.7, 0.85, 1.0, 1.15])  # report sweep
    fd_samples: int = positive(1000)  # generated images per prior for the Frechet distance
    classifier_steps: int = positive(600)  # training steps of the feature classifier


@dataclass
class RunConfig:
    seed: int = 0
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


def default_config_path() -> Path:
    """``configs/default.yaml`` of the checkout, falling back to the built-in defaults."""
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = (),
                base: dict | None = None) -> Config:
    """Read ``path`` (or start from ``base``/defaults), apply ``KEY=VALUE`` overrides, validate."""
    raw: dict = {}
    if base is not None:
        raw = _deep_copy(base)
    if path is not None:
        raw = _merge(raw, _read_yaml(Path(path)))
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw)


def save_config(config: Config, path: str | os.PathLike) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def from_dict(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise UserError("config must be a mapping of sections (data, stage1, stage2, sample, run)")
    return _build(Config, raw, prefix="")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return data or {}


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set stage1.steps=200)")
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise UserError(f"--set key {key!r} must be SECTION.KEY, e.g. stage1.steps")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise UserError(f"config section {parts[0]!r} must be a mapping")
    section[parts[1]] = parsed


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
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        list: isinstance(value, list),
    }.get(typing.get_origin(typ) or typ, True)
    if not ok:
        name = getattr(typ, "__name__", str(typ))
        raise UserError(f"config key '{key}' must be {name}{' or null' if optional else ''}, got {value!r}")
    if typ is float:
        value = float(value)
    if "choices" in meta and value not in meta["choices"]:
        close = difflib.get_close_matches(str(value), meta["choices"], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"config key '{key}' must be one of {', '.join(meta['choices'])}, got {value!r}{hint}")
    if "min" in meta and value < meta["min"]:
        raise UserError(f"config key '{key}' must be at least {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"config key '{key}' must be at most {meta['max']}, got {value!r}")
    return value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(raw: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
