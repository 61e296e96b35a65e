"""Command line of stage 2: ``python -m stage2_prior {train,evaluate} --run DIR``."""

from __future__ import annotations

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.rundir import resolve_config, run_lock
from data.training import is_main_process

from .evaluate import evaluate
from .train import train


def main(argv: list[str] | None = None, prog: str = "python -m stage2_prior") -> int:
    parser = ArgumentParser(prog=prog,
                            description="Stage 2: a gated PixelCNN prior over the VQ-VAE code grids of a run.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_parser = commands.add_parser(
        "train", help="train the prior on DIR/codes/train.h5",
        description="Train the prior on DIR/codes/train.h5 (val bits per code on DIR/codes/val.h5). "
                    "The config is DIR/config.yaml, then --config FILE, then --set overrides; "
                    "writes DIR/stage2/{checkpoint.pt,metrics.jsonl,summary.json}.")
    train_parser.add_argument("--run", required=True, metavar="DIR",
                              help="run directory holding codes/train.h5 and codes/val.h5")
    add_config_arguments(train_parser)
    train_parser.add_argument("--resume", action="store_true", help="continue from DIR/stage2/checkpoint.pt")
    evaluate_parser = commands.add_parser(
        "evaluate", help="bits per val code and bits per dimension under the learned, marginal and uniform priors",
        description="Mean negative log2-likelihood per code of DIR/codes/val.h5 under the learned prior, "
                    "the marginal prior and the uniform prior, and each prior's bits per dimension (stage 1's "
                    "distortion stored in the val code file plus the prior's rate, an upper bound on "
                    "-log2 p(x) per sub-pixel); writes DIR/stage2/bits_per_code.json.")
    evaluate_parser.add_argument("--run", required=True, metavar="DIR", help="run directory with a trained stage 2")
    args = parser.parse_args(argv)

    main_process = is_main_process()
    if args.command == "train":
        config = resolve_config(args.run, args.config, args.overrides, args.resume, first_stage="stage2")
        with run_lock(args.run, main_process):
            train(config, args.run, args.resume)
    elif main_process:
        with run_lock(args.run):
            evaluate(args.run)
    return 0


if __name__ == "__main__":
    run_main(main)
