"""The config schema: loading, overrides, validation with suggestions, saving."""

from __future__ import annotations

import pytest
import yaml

import dataclasses

from data import config_docs
from data.config import Config

from data.config_files import load_config, save_config
from data.errors import UserError

from tests.helpers import ROOT


def test_every_config_key_has_help_text():
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            assert len(f.metadata.get("help", "")) > 10, f"{section.name}.{f.name} has no help text"


def test_docs_configuration_md_is_the_schema_as_generated():
    assert config_docs.DOC.read_text(encoding="utf-8") == config_docs.markdown(), \
        "docs/configuration.md is out of date: regenerate it with `python -m data.config_docs`"


def test_the_generated_reference_states_each_default_and_rule():
    doc = config_docs.markdown()
    assert "| `stage1.num_embeddings` | `512` | int 2 to 1048576 | K, the codebook size |" in doc
    assert "| `stage2.kernel_size` | `3` | int ≥ 3, odd |" in doc
    assert "| `sample.top_p` | `null` | float > 0.0, ≤ 1.0, or null |" in doc
    assert "| `run.device` | `auto` | `auto`, `cpu`, `cuda` |" in doc
    assert doc.count("\n## `") == len(dataclasses.fields(Config))


def test_the_sweep_always_holds_t_1_in_increasing_order():
    assert load_config(overrides=["sample.temperatures=[1.15, 0.5]"]).sample.sweep == [0.5, 1.0, 1.15]
    assert load_config(overrides=["sample.temperatures=[1, 0.9]"]).sample.sweep == [0.9, 1.0]


def test_shipped_configs_all_validate():
    names = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert {"default.yaml", "tiny.yaml", "cifar10.yaml", "cifar10_ema.yaml", "mnist.yaml"} <= set(names)
    for name in names:
        assert isinstance(load_config(ROOT / "configs" / name), Config)


def test_cifar10_config_has_the_seed_notebook_hyperparameters():
    s = load_config(ROOT / "configs" / "cifar10.yaml").stage1
    assert (s.hidden, s.residual_hidden, s.residual_layers, s.encoder_residual_layers, s.embedding_dim,
            s.num_embeddings, s.commitment_cost, s.batch_size, s.decay) == (128, 32, 2, 2, 64, 512, 0.25, 256, 0.0)
    assert load_config(ROOT / "configs" / "cifar10_ema.yaml").stage1.decay > 0


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["stage1.steps=200", "data.dataset=mnist", "sample.top_k=null",
                             "sample.temperatures=[0.5, 1]", "stage2.conditional=true"])
    assert cfg.stage1.steps == 200 and cfg.data.dataset == "mnist" and cfg.sample.top_k is None
    assert cfg.sample.temperatures == [0.5, 1] and cfg.stage2.conditional is True


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["stage1.lr=1"]).stage1.lr == 1.0
    with pytest.raises(UserError, match="stage1.steps' must be int"):
        load_config(None, ["stage1.steps=1.5"])


def test_an_exponent_without_a_dot_is_a_float_as_users_mean_it():
    # YAML 1.1 reads 3e-3 as a string; only float keys take it as the number
    cfg = load_config(None, ["stage1.lr=3e-3", "stage2.lr=1E-2", "sample.temperatures=[1e0, 0.5]"])
    assert (cfg.stage1.lr, cfg.stage2.lr, cfg.sample.temperatures) == (0.003, 0.01, [1.0, 0.5])
    with pytest.raises(UserError, match="stage1.steps' must be int"):
        load_config(None, ["stage1.steps=1e3"])
    with pytest.raises(UserError, match="must be float"):
        load_config(None, ["stage1.lr=e-3"])


def test_stage2_dropout_defaults_to_each_architectures_own():
    pixelcnn, transformer = (load_config(None, [f"stage2.architecture={a}"]).stage2.model_config()
                             for a in ("pixelcnn", "transformer"))
    assert (pixelcnn.dropout, transformer.dropout) == (0.1, 0.0)
    chosen = load_config(None, ["stage2.architecture=transformer", "stage2.dropout=0.2"]).stage2.model_config()
    assert chosen.dropout == 0.2
    with pytest.raises(UserError, match="'stage2.dropout' must be at most 0.9"):
        load_config(None, ["stage2.dropout=0.95"])


@pytest.mark.parametrize("override, message", [
    ("stage1.num_embedings=8", "unknown config key 'stage1.num_embedings'; did you mean 'stage1.num_embeddings'"),
    ("stage3.steps=1", "unknown config key 'stage3'; did you mean 'stage"),
    ("data.dataset=fashion-mnist", "did you mean 'fashion_mnist'"),
    ("stage1.decay=1.5", "'stage1.decay' must be at most"),
    ("stage1.steps=0", "'stage1.steps' must be at least 1"),
    ("stage1.compile=yes please", "'stage1.compile' must be bool"),
    ("steps=3", "must be SECTION.KEY"),
    ("stage1.steps", "must be KEY=VALUE"),
])
def test_bad_values_are_errors_that_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage1:\n  comitment_cost: 0.3\n")
    with pytest.raises(UserError, match="did you mean 'stage1.commitment_cost'"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["stage1.steps=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["stage1"]["steps"] == 7
    assert load_config(tmp_path / "config.yaml") == cfg
