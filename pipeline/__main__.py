"""Pipeline command line: ``run`` the whole job, ``sample`` new images from a run, ``report`` a run,
``export`` it, ``fid`` its samples, ``compare`` several runs, ``verify`` the files of a run or a saved
pipeline."""

from __future__ import annotations

import contextlib
from pathlib import Path

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.config import MAX_SEED
from data.config_files import load_config
from data.errors import BadValue, UserError
from data.rundir import RunPaths, resolve_config, run_config, run_lock
from stage2_prior import PRIORS
from stage2_prior.sampling import METHODS, check_sampling

from .sample_files import check_outputs, stream_samples


def parse(argv, prog: str = "python -m pipeline"):
    parser = ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser, metavar="COMMAND")

    r = sub.add_parser("run", help="train both stages, sample, and write the prior study report",
                       description="The main job. With no arguments: configs/default.yaml, the embedded "
                                   "Fashion-MNIST, and a fresh run directory under runs/.")
    add_config_arguments(r)
    r.add_argument("--run", metavar="DIR", help="run directory (default: run.dir, else runs/<date>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run: skip completed stages")

    s = sub.add_parser("sample", help="sample new images from a trained run",
                       description="Sample code grids from a prior of a trained run and decode them to a PNG grid.")
    s.add_argument("--run", required=True, metavar="DIR", help="a run with both stages trained")
    s.add_argument("--prior", default="learned", choices=PRIORS)
    s.add_argument("--n", type=int, help="number of images (default: the run's sample.n)")
    s.add_argument("--temperature", type=float, help="softmax temperature (default: the run's sample.temperature)")
    s.add_argument("--top-k", type=int, help="sample among the k most likely codes only")
    s.add_argument("--top-p", type=float, help="nucleus sampling: the most likely codes up to mass P, in (0, 1]")
    s.add_argument("--seed", type=int, help="random seed (default: the run's run.seed)")
    s.add_argument("--label", type=int, help="class to sample (class-conditional learned prior only)")
    default_grid = RunPaths("DIR").user_sample("<prior>", "<S>")
    s.add_argument("--out", metavar="FILE.png", help=f"the grid (default: {default_grid})")
    s.add_argument("--images-dir", metavar="FOLDER", help="also write one PNG per image into FOLDER")
    s.add_argument("--codes", metavar="FILE.h5", help="also write the sampled codes as an HDF5 code file")
    s.add_argument("--method", default="cached", choices=METHODS, help="sampling algorithm")
    s.add_argument("--force", action="store_true", help="replace existing output files (never the run's own files)")

    p = sub.add_parser("report", help=f"(re)write {RunPaths('DIR').metrics}, the plots and {RunPaths('DIR').index}")
    p.add_argument("--run", required=True, metavar="DIR")

    x = sub.add_parser("export", help="save a trained run's pipeline for sharing (safetensors + JSON)",
                       description="Write the run's inference weights and configs with "
                                   "VQPriorPipeline.save_pretrained; load them with VQPriorPipeline.from_pretrained.")
    x.add_argument("--run", required=True, metavar="DIR", help="a run with both stages trained")
    x.add_argument("--out", required=True, metavar="DIR2", help="new folder for the saved pipeline")
    x.add_argument("--force", action="store_true", help="replace the files of an existing saved pipeline")

    f = sub.add_parser("fid", help="Inception FID of a trained run's samples (needs the fid extra)",
                       description="Fréchet distance in the standard FID InceptionV3's features between the val "
                                   "images and each prior's samples (and the reconstructions), at the run's sample "
                                   f"settings; writes {RunPaths('DIR').inception_fid} and refreshes the report. "
                                   "Needs `pip install -e '.[fid]'`; about 0.14 s per image on 2 CPU cores.")
    f.add_argument("--run", required=True, metavar="DIR", help="a run with both stages trained")
    f.add_argument("--n", type=int, help="images per set (default: the run's sample.fd_samples; at most the val split)")

    c = sub.add_parser("compare", help="put finished runs side by side: one HTML page and a Markdown table",
                       description="Read finished runs (never recomputing) and write DIR2/compare.html and "
                                   "DIR2/compare.md: the settings that differ, bits per code, bits per dimension, "
                                   "Fréchet distance over a perfect prior's, novelty, sizes, times and samples.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories")
    c.add_argument("--out", required=True, metavar="DIR2", help="folder for compare.html and compare.md")

    v = sub.add_parser("verify", help="check a run's or a saved pipeline's files against their checksums",
                       description="Check each checkpoint and code file of a run, or each file of a saved pipeline, "
                                   "against the checksum written with it: one line per file; exit 2 when one is "
                                   "damaged. Reads only: needs no write access and no lock.")
    where = v.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", metavar="DIR", help="a run directory")
    where.add_argument("--pretrained", metavar="DIR2", help="a folder written by export / save_pretrained")
    return parser.parse_args(argv)


def command_run(args) -> None:
    from .run import default_run_dir, run

    if args.run:
        run_dir = Path(args.run)
    else:  # run.dir of the config, or a fresh folder named by the time
        run_dir = default_run_dir(load_config(args.config or "default", args.overrides))
        if args.resume and not load_config(args.config or "default", args.overrides).run.dir:
            raise UserError("--resume needs the run directory: pass --run DIR")
    config = resolve_config(run_dir, args.config, args.overrides, args.resume)
    print(f"run directory: {run_dir}")
    metrics = run(config, run_dir, resume=args.resume)
    if not metrics:  # a non-main process of a multi-process launch
        return
    bits = metrics["bits_per_code"]
    fd = metrics["sample_quality"]
    print(f"bits per code: learned {bits['learned']:.3f}, marginal {bits['marginal']:.3f}, "
          f"uniform {bits['uniform']:.3f}")
    print(f"Fréchet distance: learned {fd['fd_learned']:.2f} = {fd['fd_learned_over_perfect_prior']:.2f}x a perfect "
          f"prior's {fd['fd_perfect_prior']:.2f}; marginal {fd['fd_marginal']:.2f}, uniform {fd['fd_uniform']:.2f}; "
          f"training images {fd['fd_train_images']:.2f}, reconstructions {fd['fd_reconstructions']:.2f}")
    bpd = metrics.get("bits_per_dim")
    if bpd:
        print(f"bits per dimension (negative ELBO): learned {bpd['learned']:.3f}, marginal {bpd['marginal']:.3f}, "
              f"uniform {bpd['uniform']:.3f} (distortion {bpd['distortion']:.3f})")


def command_sample(args) -> None:
    from data import CodeWriter

    from .pipeline import VQPriorPipeline

    run_dir = Path(args.run)
    config = run_config(RunPaths(run_dir))
    s = config.sample
    n = s.n if args.n is None else args.n
    temperature = s.temperature if args.temperature is None else args.temperature
    top_k = s.top_k if args.top_k is None else args.top_k
    top_p = s.top_p if args.top_p is None else args.top_p
    seed = config.run.seed if args.seed is None else args.seed
    check_sampling(n, temperature, None, top_p, method=args.method)  # before loading anything
    if not 0 <= seed <= MAX_SEED:
        raise BadValue("seed", f"must lie in [0, {MAX_SEED}]", seed)
    grid_path = Path(args.out) if args.out else RunPaths(run_dir).user_sample(args.prior, seed)
    outputs = check_outputs(run_dir, n, grid_path, args)

    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    check_sampling(n, temperature, top_k, top_p, pipe.num_embeddings, args.method)
    pipe.labels_for(n, args.prior, args.label)  # a label the prior cannot take fails before any output
    batches = pipe.generate(n, args.prior, temperature=temperature, top_k=top_k, top_p=top_p, labels=args.label,
                            seed=seed, method=args.method,  # codes alone need no decoder pass
                            decode=outputs.grid is not None or outputs.images_dir is not None)
    writer = None
    if args.codes:
        writer = CodeWriter(args.codes, num_embeddings=pipe.num_embeddings,
                            embedding_dim=pipe.vqvae.quantizer.embedding_dim, grid=pipe.grid,
                            dataset=config.data.dataset, split=f"sampled-{args.prior}",
                            stage1_checkpoint_sha256=pipe.stage1_checkpoint_sha256,
                            has_labels=pipe.labels_for(1, args.prior, args.label) is not None)
    with writer or contextlib.nullcontext():
        stream_samples(batches, writer, outputs, args, seed)
    settings = f"T={temperature}, top-k={top_k}, top-p={top_p}, seed={seed}"
    print(f"sampled {n} images from the {args.prior} prior ({settings})" +
          "".join(f"; wrote {what}" for what in outputs.describe(n)))


def writes_into_run(args) -> bool:
    """Whether ``sample`` writes into the run directory (its default grid does; ``--out`` elsewhere does not)."""
    root = Path(args.run).resolve()
    outputs = [args.out, args.images_dir, args.codes]
    return args.out is None or any(o is not None and Path(o).resolve().is_relative_to(root) for o in outputs)


def command_export(args) -> None:
    from .pipeline import VQPriorPipeline

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the saved pipeline")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} is not empty; choose a new folder or pass --force to replace a saved pipeline there")
    if RunPaths(out).config.is_file():
        raise UserError(f"{out} is a run directory; export into a new folder")
    pipe = VQPriorPipeline.from_run(args.run, device="cpu")
    pipe.save_pretrained(out)
    print(f"saved the pipeline of {args.run} to {out} (load it with VQPriorPipeline.from_pretrained)")


def command_fid(args) -> None:
    from .inception import weights_file
    from .pipeline import VQPriorPipeline
    from .report import write_report
    from .run import write_inception_fid

    paths = RunPaths(args.run)
    config = run_config(paths)
    n = config.sample.fd_samples if args.n is None else args.n
    if n < 2:
        raise UserError(f"--n must be at least 2 (a Fréchet distance needs a covariance), got {n}")
    weights_file()  # the one-line error for a missing extra, before any work
    pipe = VQPriorPipeline.from_run(paths.root, config.run.device)
    result = write_inception_fid(pipe, config, paths, n)
    print(f"Inception FID ({result['images']} images per set, {result['seconds']:.0f} s): " + ", ".join(
        f"{k.removeprefix('fid_inception_')} {v:.2f}" for k, v in result.items() if k.startswith("fid_inception_")))
    if paths.metrics.is_file():
        write_report(paths.root, config)
        print(f"report updated: {paths.index}")


def main(argv=None, prog: str = "python -m pipeline") -> int:
    args = parse(argv, prog)
    if args.command == "run":
        command_run(args)
    elif args.command == "sample":
        # a reader needs no lock: only output into the run itself takes the writer's
        with run_lock(args.run) if writes_into_run(args) else contextlib.nullcontext():
            command_sample(args)
    elif args.command == "export":
        command_export(args)
    elif args.command == "fid":
        with run_lock(args.run):
            command_fid(args)
    elif args.command == "verify":
        from .verify import pretrained_checks, run_checks, verify

        checks = run_checks(args.run) if args.run else pretrained_checks(args.pretrained)
        bad = verify(checks)
        if bad:
            raise UserError(f"{len(bad)} of {len(checks)} files are damaged or unreadable: {', '.join(bad)}",
                            advice="see the lines above for how to get good ones")
    elif args.command == "compare":
        from .compare import compare

        page, table = compare(args.runs, args.out)
        print(f"wrote {page} and {table}")
    else:
        from .report import write_report

        with run_lock(args.run):
            metrics = write_report(args.run, run_config(args.run))
        print(f"wrote {RunPaths(args.run).index} (learned prior: "
              f"{metrics['bits_per_code']['learned']:.3f} bits per code)")
    return 0


if __name__ == "__main__":
    run_main(main)
