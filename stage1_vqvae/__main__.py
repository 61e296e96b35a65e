"""Stage-1 command line: ``train`` a VQ-VAE, ``encode`` a run's data to HDF5 code grids."""

from __future__ import annotations

from pathlib import Path

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.errors import UserError
from data.rundir import RunPaths, resolve_config, run_config, run_lock
from data.training import is_main_process


def parse(argv, prog: str = "python -m stage1_vqvae"):
    run = RunPaths("RUN")  # the run's files, as help text names them
    parser = ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("train", help=f"train the VQ-VAE into {run.stage1}")
    add_config_arguments(t)
    t.add_argument("--run", required=True, metavar="DIR", help="run directory")
    t.add_argument("--resume", action="store_true", help=f"continue {run.stage1} from its checkpoint")
    e = sub.add_parser("encode", help=f"write {run.codes('train')} and {run.codes('val')} with the trained VQ-VAE")
    e.add_argument("--run", required=True, metavar="DIR", help="run directory")
    e.add_argument("--split", choices=("train", "val", "all"), default="all")
    e.add_argument("--force", action="store_true", help="re-encode files that already exist")
    e.add_argument("--batch-size", type=int, default=1000)
    return parser.parse_args(argv)


def main(argv=None, prog: str = "python -m stage1_vqvae") -> int:
    args = parse(argv, prog)
    run_dir = Path(args.run)
    if args.command == "train":
        from .train import train

        config = resolve_config(run_dir, args.config, args.overrides, args.resume, first_stage="stage1")
        with run_lock(run_dir, is_main_process()):
            summary = train(config, run_dir, resume=args.resume)
        print(f"stage 1 done: val NMSE {summary['val_recon_nmse']:.4f}, perplexity {summary['perplexity']:.1f}, "
              f"{summary['codes_used']}/{summary['num_embeddings']} codes used -> {RunPaths(run_dir).stage1}")
    else:
        from .encode import encode_run

        if args.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        with run_lock(run_dir, is_main_process()):
            encode_run(run_dir, run_config(run_dir), args.split, force=args.force, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    run_main(main)
