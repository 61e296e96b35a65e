"""Pipeline command line: ``run`` the whole job, ``sample`` new images from a run, ``report`` a run."""

from __future__ import annotations

from pathlib import Path

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.config import load_config
from data.errors import UserError
from data.rundir import resolve_config, run_lock


def parse(argv):
    parser = ArgumentParser(prog="python -m pipeline", description=__doc__)
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
    s.add_argument("--prior", default="learned", choices=("learned", "marginal", "uniform"))
    s.add_argument("--n", type=int, help="number of images (default: the run's sample.n)")
    s.add_argument("--temperature", type=float, help="softmax temperature (default: the run's sample.temperature)")
    s.add_argument("--top-k", type=int, help="sample among the k most likely codes only")
    s.add_argument("--top-p", type=float, help="nucleus sampling: the most likely codes up to mass P, in (0, 1]")
    s.add_argument("--seed", type=int, help="random seed (default: the run's run.seed)")
    s.add_argument("--label", type=int, help="class to sample (class-conditional learned prior only)")
    s.add_argument("--out", metavar="FILE.png", help="the grid (default: DIR/samples/sample_<prior>_seed<S>.png)")
    s.add_argument("--images-dir", metavar="FOLDER", help="also write one PNG per image into FOLDER")
    s.add_argument("--codes", metavar="FILE.h5", help="also write the sampled codes as an HDF5 code file")
    s.add_argument("--method", default="cached", choices=("cached", "naive"), help="sampling algorithm")

    p = sub.add_parser("report", help="(re)write DIR/report/metrics.json and index.html")
    p.add_argument("--run", required=True, metavar="DIR")

    x = sub.add_parser("export", help="save a trained run's pipeline for sharing (safetensors + JSON)",
                       description="Write the run's inference weights and configs with "
                                   "VQPriorPipeline.save_pretrained; load them with VQPriorPipeline.from_pretrained.")
    x.add_argument("--run", required=True, metavar="DIR", help="a run with both stages trained")
    x.add_argument("--out", required=True, metavar="DIR2", help="new folder for the saved pipeline")
    x.add_argument("--force", action="store_true", help="replace the files of an existing saved pipeline")
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
          f"uniform {bits['uniform']:.3f};  FD: learned {fd['fd_learned']:.2f}, marginal {fd['fd_marginal']:.2f}, "
          f"uniform {fd['fd_uniform']:.2f}, reconstructions {fd['fd_reconstructions']:.2f}")


def command_sample(args) -> None:
    from data import CodeWriter
    from data.datasets import save_image_grid, to_unit_range

    from .pipeline import VQPriorPipeline
    from .run import grid_columns

    run_dir = Path(args.run)
    if args.out is not None and not args.out.lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args.out}")
    if args.codes is not None and not args.codes.lower().endswith(".h5"):
        raise UserError(f"--codes must name a .h5 file, got {args.codes}")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); run `python -m pipeline run` first")
    config = load_config(run_dir / "config.yaml")
    n = config.sample.n if args.n is None else args.n
    temperature = config.sample.temperature if args.temperature is None else args.temperature
    top_k = config.sample.top_k if args.top_k is None else args.top_k
    top_p = config.sample.top_p if args.top_p is None else args.top_p
    seed = config.run.seed if args.seed is None else args.seed
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"--top-p must lie in (0, 1], got {top_p}")

    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    if top_k is not None and not 1 <= top_k <= pipe.num_embeddings:
        raise UserError(f"--top-k must lie in [1, {pipe.num_embeddings}], got {top_k}")
    if args.label is not None and pipe.num_classes and not 0 <= args.label < pipe.num_classes:
        raise UserError(f"--label must lie in [0, {pipe.num_classes}), got {args.label}")
    out = pipe(n, args.prior, temperature=temperature, top_k=top_k, top_p=top_p, labels=args.label, seed=seed,
               method=args.method)

    path = Path(args.out) if args.out else run_dir / "samples" / f"sample_{args.prior}_seed{seed}.png"
    save_image_grid(out.images, path, nrow=grid_columns(n))
    print(f"wrote {path}: {n} samples from the {args.prior} prior (T={temperature}, top-k={top_k}, top-p={top_p}, "
          f"seed={seed})")
    if args.images_dir:
        from torchvision.utils import save_image

        from data.io import atomic_path

        folder = Path(args.images_dir)
        for i, image in enumerate(out.images):
            with atomic_path(folder / f"{args.prior}_seed{seed}_{i:05d}.png") as tmp:
                save_image(to_unit_range(image), tmp, format="png")
        print(f"wrote {n} images to {folder}")
    if args.codes:
        with CodeWriter(args.codes, num_embeddings=pipe.num_embeddings,
                        embedding_dim=pipe.vqvae.quantizer.embedding_dim, grid=pipe.grid,
                        dataset=config.data.dataset, split=f"sampled-{args.prior}",
                        stage1_checkpoint_sha256=pipe.stage1_checkpoint_sha256,
                        has_labels=out.labels is not None) as writer:
            writer.append(out.codes, out.labels)
        print(f"wrote {args.codes}: {n} code grids")


def command_export(args) -> None:
    from .pipeline import VQPriorPipeline

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the saved pipeline")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} is not empty; choose a new folder or pass --force to replace a saved pipeline there")
    if (out / "config.yaml").is_file():
        raise UserError(f"{out} is a run directory; export into a new folder")
    pipe = VQPriorPipeline.from_run(args.run, device="cpu")
    pipe.save_pretrained(out)
    print(f"saved the pipeline of {args.run} to {out} (load it with VQPriorPipeline.from_pretrained)")


def main(argv=None) -> int:
    args = parse(argv)
    if args.command == "run":
        command_run(args)
    elif args.command == "sample":
        with run_lock(args.run):
            command_sample(args)
    elif args.command == "export":
        command_export(args)
    else:
        from .report import write_report

        with run_lock(args.run):
            metrics = write_report(Path(args.run))
        print(f"wrote {Path(args.run) / 'report' / 'index.html'} (learned prior: "
              f"{metrics['bits_per_code']['learned']:.3f} bits per code)")
    return 0


if __name__ == "__main__":
    run_main(main)
