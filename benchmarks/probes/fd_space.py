"""Probe (not part of the product): how much does a run's FD ratio depend on the feature network?

Draws the image sets of the run's quality step once (val reconstructions, ``sample.fd_draws``
draws of the learned prior), then trains the feature classifier with several seeds and reports
fd_learned / fd_reconstructions in each feature space.

    python -m benchmarks.probes.fd_space RUN [SEEDS] [STEPS] [TASK]
    python -m benchmarks.probes.fd_space runs/ablate/flat-j700-d500-s1 0,1,2,3 600 rotation
"""

import json
import sys
import time

from data import load_split
from data.config_files import load_config
from data.rundir import RunPaths
from pipeline.pipeline import VQPriorPipeline
from pipeline.classifier import accuracy, train_classifier
from pipeline.frechet import sample_quality
from pipeline.run import fd_image_sets, learned_draws


def main(run: str, seeds: str = "0,1,2,3", steps: str = "600", task: str = "auto") -> None:
    cfg = load_config(f"{run}/config.yaml", [])
    pipe = VQPriorPipeline.from_run(run, "cpu")
    real, generated = fd_image_sets(pipe, cfg, RunPaths(run), cfg.sample.fd_samples)
    generated["learned"], _ = learned_draws(pipe, cfg, generated["learned"])
    train, val = load_split(cfg.data, "train"), load_split(cfg.data, "val")
    labels = None if task == "rotation" else train.labels
    for classifier_seed in map(int, seeds.split(",")):
        tic = time.time()
        net = train_classifier(train.images, labels, train.num_classes or None, steps=int(steps), seed=classifier_seed)
        q = sample_quality(net, real, {k: generated[k] for k in ("reconstructions", "learned", "marginal")})
        print(json.dumps({"run": run, "classifier_seed": classifier_seed, "steps": int(steps), "task": net.task,
                          "val_acc": round(accuracy(net, val.images, None if labels is None else val.labels), 3),
                          "fd_recon": round(q["fd_reconstructions"], 3), "fd_learned": round(q["fd_learned"], 3),
                          "fd_marginal": round(q["fd_marginal"], 3),
                          "ratio": round(q["fd_learned"] / q["fd_reconstructions"], 3),
                          "s": round(time.time() - tic, 1)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # the usage is the docstring
        print(__doc__)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    main(*sys.argv[1:])
