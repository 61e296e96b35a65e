"""Config files: read a YAML config (a path, or the name of one shipped in the package), apply
``KEY=VALUE`` overrides, validate it against the schema (``data.config``); write one back.

Overrides take dotted keys and YAML values (``stage1.steps=200``, ``sample.top_k=null``); later
ones win, and they apply on top of a ``base`` mapping (a run's saved config) when given.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

from .config import Config, from_dict
from .errors import BadValue, UserError
from .io import write_text


def shipped_configs() -> list[str]:
    """Names of the configs that ship inside the package (``configs/*.yaml``)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("configs").iterdir()
                  if p.name.endswith(".yaml"))


def config_path(name_or_path: str | os.PathLike | None) -> Path:
    """A config file: an existing path, else the shipped config of that name (``default`` when None).

    The shipped configs are package data, so the name ``cifar10`` works from any folder and
    from a non-editable install.
    """
    if name_or_path is not None and Path(name_or_path).is_file():
        return Path(name_or_path)
    name = Path(name_or_path or "default").name.removesuffix(".yaml")
    shipped = resources.files("configs") / f"{name}.yaml"
    if (name_or_path is None or Path(name_or_path).parent == Path(".")) and shipped.is_file():
        return Path(str(shipped))
    raise UserError(f"config file not found: {name_or_path}; give a YAML file or one of the shipped configs "
                    f"({', '.join(shipped_configs())})")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = (),
                base: dict | None = None) -> Config:
    """Read ``path`` (or start from ``base``/defaults), apply ``KEY=VALUE`` overrides, validate."""
    raw: dict = {}
    if base is not None:
        raw = _deep_copy(base)
    if path is not None:
        raw = _merge(raw, _read_yaml(config_path(path)))
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(raw)


def save_config(config: Config, path: str | os.PathLike) -> None:
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_bytes().decode("utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of sections (data, stage1, stage2, sample, run), "
                        f"not a {type(data).__name__}")
    return data


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BadValue("override", "must be KEY=VALUE (e.g. stage1.steps=200)", repr(item))
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise BadValue("override", f"key {key!r} must be SECTION.KEY, e.g. stage1.steps")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise UserError(f"config section {parts[0]!r} must be a mapping")
    section[parts[1]] = parsed


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
