"""``docs/configuration.md``, generated from the config schema in ``data.config``.

Every key's default, the values it accepts and what it means are written once, in the
dataclasses' fields (``setting`` and its kin); this module only lays them out as Markdown
tables, one per YAML section. Regenerate the file after changing the schema with
``python -m data.config_docs`` (a test fails while it is out of date).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from .config import Config, yaml_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

INTRO = """\
# Configuration

Generated from the config schema (`data/config.py`) by `python -m data.config_docs`; do not edit by hand.

A config file is YAML with the five sections below; a key left out takes its default (the defaults
are the default run, `configs/default.yaml`). `--set SECTION.KEY=VALUE` overrides one key on the
command line. An unknown key or a value outside what the key accepts is an error that names the key
(and the closest valid one). A run saves the config it resolved in its own directory.
"""


def accepted(hint, meta: dict) -> str:
    """What a key accepts, from its type and its field's rules: ``1 to 4096, or null``."""
    optional = type(None) in typing.get_args(hint)
    if "choices" in meta:
        return ", ".join(f"`{yaml_text(c)}`" for c in meta["choices"])
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    list_of = typing.get_origin(base) is list
    kind = typing.get_args(base)[0] if list_of else base
    rules = []
    if "min" in meta and "max" in meta:
        rules.append(f"{yaml_text(meta['min'])} to {yaml_text(meta['max'])}")
    elif "min" in meta:
        rules.append(f"≥ {yaml_text(meta['min'])}")
    if "above" in meta:
        rules.append(f"> {yaml_text(meta['above'])}" + (f", ≤ {yaml_text(meta['max'])}" if "max" in meta else ""))
    if meta.get("odd"):
        rules.append("odd")
    text = " ".join([kind.__name__] + ([", ".join(rules)] if rules else []))
    text = f"list of {text}" if list_of else text
    return f"{text}, or null" if optional else text


def section_table(name: str, section) -> str:
    hints = typing.get_type_hints(section)
    rows = ["| key | default | accepts | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(section):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append(f"| `{name}.{f.name}` | `{yaml_text(default)}` | {accepted(hints[f.name], f.metadata)} "
                    f"| {f.metadata['help']} |")
    return "\n".join(rows)


def markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    sections = typing.get_type_hints(Config)
    parts = [INTRO.rstrip()] + [f"## `{f.name}`\n\n" + section_table(f.name, sections[f.name])
                                for f in dataclasses.fields(Config)]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    DOC.write_text(markdown(), encoding="utf-8")
    print(f"wrote {DOC}")
