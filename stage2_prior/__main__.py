"""Command line of stage 2: ``python -m stage2_prior {train,evaluate} --run DIR``."""

from __future__ import annotations

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.rundir import RunPaths, resolve_config, run_config, run_lock
from data.training import is_main_process

from .evaluate import evaluate
from .train import train


def main(argv: list[str] | None = None, prog: str = "python -m stage2_prior") -> int:
    run = RunPaths("DIR")  # the run's files, as help text names them
    parser = ArgumentParser(prog=prog,
                            description="Stage 2: a gated PixelCNN prior over the VQ-VAE code grids of a run.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_parser = commands.add_parser(
        "train", help=f"train the prior on {run.codes('train')}",
        description=f"Train the prior on {run.codes('train')} (val bits per code on {run.codes('val')}). "
                    f"The config is {run.config}, then --config FILE, then --set overrides; "
                    f"writes {run.stage2_checkpoint}, {run.stage2_metrics} and {run.stage2_summary}.")
    train_parser.add_argument("--run", required=True, metavar="DIR",
                              help="run directory holding the train and val codes")
    add_config_arguments(train_parser)
    train_parser.add_argument("--resume", action="store_true", help=f"continue from {run.stage2_checkpoint}")
    evaluate_parser = commands.add_parser(
        "evaluate", help="bits per val code and bits per dimension under the learned, marginal and uniform priors",
        description=f"Mean negative log2-likelihood per code of {run.codes('val')} under the learned prior, "
                    "the marginal prior and the uniform prior, and each prior's bits per dimension (stage 1's "
                    "distortion stored in the val code file plus the prior's rate, an upper bound on "
                    f"-log2 p(x) per sub-pixel); writes {run.bits}.")
    evaluate_parser.add_argument("--run", required=True, metavar="DIR", help="run directory with a trained stage 2")
    args = parser.parse_args(argv)

    main_process = is_main_process()
    if args.command == "train":
        config = resolve_config(args.run, args.config, args.overrides, args.resume, first_stage="stage2")
        with run_lock(args.run, main_process):
            train(config, args.run, args.resume)
    elif main_process:
        with run_lock(args.run):
            evaluate(args.run, run_config(args.run))
    return 0


if __name__ == "__main__":
    run_main(main)
