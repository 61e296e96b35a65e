"""Probe (not part of the product): what Fréchet distance would a perfect prior reach?

A prior that sampled exactly the distribution of the training codes would produce decoded
training grids. This measures, in the run's own feature space and against the same val images
as the quality step, the FD of several random sets of decoded training codes (a perfect prior's
draws) and of the raw training images (a perfect generator's draws), beside the floor.

    python benchmarks/fd_reference_probe.py RUN [SETS]
    python benchmarks/fd_reference_probe.py runs/quiet6 5
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data import load_split, to_model_range  # noqa: E402
from data.codes import load_codes  # noqa: E402
from data.config import load_config  # noqa: E402
from data.rundir import RunPaths  # noqa: E402
from pipeline.pipeline import VQPriorPipeline  # noqa: E402
from pipeline.quality import features, frechet_distance, load_or_train_classifier  # noqa: E402


def main(run: str, sets: str = "5") -> None:
    cfg = load_config(f"{run}/config.yaml", [])
    pipe = VQPriorPipeline.from_run(run, "cpu")
    classifier, _ = load_or_train_classifier(run, cfg)
    n = cfg.sample.fd_samples
    real = features(classifier, to_model_range(load_split(cfg.data, "val").images[:n]))
    train_images = load_split(cfg.data, "train").images
    train_codes, _, _ = load_codes(RunPaths(run).codes("train"), split="train")
    val_codes, _, _ = load_codes(RunPaths(run).codes("val"), split="val")
    distance = lambda images: round(frechet_distance(real, features(classifier, images)), 3)  # noqa: E731
    print(json.dumps({"run": run, "floor": distance(pipe.decode(val_codes[:len(real)]))}))
    generator = torch.Generator().manual_seed(0)
    for s in range(int(sets)):
        index = torch.randperm(len(train_codes), generator=generator)[:len(real)]
        print(json.dumps({"set": s, "decoded_train_codes": distance(pipe.decode(train_codes[index])),
                          "train_images": distance(to_model_range(train_images[index]))}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
