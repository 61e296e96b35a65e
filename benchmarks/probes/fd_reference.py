"""Probe (not part of the product): what Fréchet distance would a perfect prior reach?

A prior that sampled exactly the distribution of the training codes would produce decoded
training grids. This measures, in the run's own feature space and against the same val images
as the quality step, the FD of several random sets of decoded training codes (a perfect prior's
draws) and of the raw training images (a perfect generator's draws), beside the floor, with
``pipeline.frechet.sample_quality``: the mean of the sets and every set under ``fd_by_draw``.

    python -m benchmarks.probes.fd_reference RUN [SETS]
    python -m benchmarks.probes.fd_reference runs/quiet6 5
"""

import json
import sys

import torch

from data import load_split, to_model_range
from data.codes import load_codes
from data.config_files import load_config
from data.rundir import RunPaths
from pipeline.pipeline import VQPriorPipeline
from pipeline.classifier import load_or_train_classifier
from pipeline.frechet import sample_quality


def main(run: str, sets: str = "5") -> None:
    cfg = load_config(f"{run}/config.yaml", [])
    pipe = VQPriorPipeline.from_run(run, "cpu")
    classifier, _ = load_or_train_classifier(RunPaths(run), cfg)
    real = to_model_range(load_split(cfg.data, "val").images[:cfg.sample.fd_samples])
    train_images = load_split(cfg.data, "train").images
    train_codes, _, _ = load_codes(RunPaths(run).codes("train"), split="train")
    val_codes, _, _ = load_codes(RunPaths(run).codes("val"), split="val")
    generator = torch.Generator().manual_seed(0)
    subsets = [torch.randperm(len(train_codes), generator=generator)[:len(real)] for _ in range(int(sets))]
    quality = sample_quality(classifier, real, {
        "floor": pipe.decode(val_codes[:len(real)]),
        "decoded_train_codes": [pipe.decode(train_codes[index]) for index in subsets],
        "train_images": [to_model_range(train_images[index]) for index in subsets]})
    print(json.dumps({"run": run, **quality}, indent=1))

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # the usage is the docstring
        print(__doc__)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    main(*sys.argv[1:])
