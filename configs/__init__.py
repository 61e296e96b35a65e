"""The shipped YAML configs, installed as package data so ``--config NAME`` works from any folder.

``data.config_files.config_path("cifar10")`` finds ``configs/cifar10.yaml`` here; ``default.yaml`` is
the main job's config and states exactly the schema's built-in defaults.
"""
