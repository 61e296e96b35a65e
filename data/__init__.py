"""Foundation package shared by both stages and the pipeline.

* ``data.datasets``: image datasets (embedded Fashion-MNIST, torchvision, image folder) and the
  model's value range;
* ``data.config``: the config schema (every YAML key of every stage) and its validator;
* ``data.config_files``: reading YAML configs and overrides, writing them back;
* ``data.codes``: the HDF5 code-file schema, writer and validating readers;
* ``data.io``: atomic files, checkpoints, metrics logs, RNG state;
* ``data.cli``: one-line errors with exit code 2.
"""

from .codes import CodeDataset, CodeInfo, CodeWriter, code_dtype, load_codes, read_code_info
from .config import Config
from .config_files import load_config, save_config
from .datasets import ImageSet, data_variance, load_split, to_model_range, to_unit_range
from .errors import UserError

__all__ = [
    "CodeDataset", "CodeInfo", "CodeWriter", "Config", "ImageSet", "UserError", "code_dtype", "data_variance",
    "load_codes", "load_config", "load_split", "read_code_info", "save_config", "to_model_range", "to_unit_range",
]
