"""Pipeline command line: ``run`` the whole job, ``sample`` new images from a run, ``report`` a run."""

from __future__ import annotations

from pathlib import Path

from data.cli import ArgumentParser, add_config_arguments, run_main
from data.config import default_config_path, load_config
from data.errors import UserError


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
    s.add_argument("--seed", type=int, help="random seed (default: the run's run.seed)")
    s.add_argument("--label", type=int, help="class to sample (class-conditional learned prior only)")
    s.add_argument("--out", metavar="FILE.png", help="the grid (default: DIR/samples/sample_<prior>_seed<S>.png)")
    s.add_argument("--images-dir", metavar="FOLDER", help="also write one PNG per image into FOLDER")
    s.add_argument("--codes", metavar="FILE.h5", help="also write the sampled codes as an HDF5 code file")
    s.add_argument("--method", default="cached", choices=("cached", "naive"), help="sampling algorithm")

    p = sub.add_parser("report", help="(re)write DIR/report/metrics.json and index.html")
    p.add_argument("--run", required=True, metavar="DIR")
    return parser.parse_args(argv)


def command_run(args) -> None:
    from .run import default_run_dir, run

    saved = Path(args.run) / "config.yaml" if args.run else None
    if args.resume and saved is not None and saved.is_file():
        config = load_config(args.config, args.overrides, base=load_config(saved).to_dict())
    else:
        config = load_config(args.config or default_config_path(), args.overrides)
    if args.resume and not args.run and not config.run.dir:
        raise UserError("--resume needs the run directory: pass --run DIR")
    run_dir = Path(args.run) if args.run else default_run_dir(config)
    print(f"run directory: {run_dir}")
    metrics = run(config, run_dir, resume=args.resume)
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
    seed = config.run.seed if args.seed is None else args.seed
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0, got {temperature}")

    pipe = VQPriorPipeline.from_run(run_dir, config.run.device)
    if top_k is not None and not 1 <= top_k <= pipe.num_embeddings:
        raise UserError(f"--top-k must lie in [1, {pipe.num_embeddings}], got {top_k}")
    if args.label is not None and pipe.num_classes and not 0 <= args.label < pipe.num_classes:
        raise UserError(f"--label must lie in [0, {pipe.num_classes}), got {args.label}")
    out = pipe(n, args.prior, temperature=temperature, top_k=top_k, labels=args.label, seed=seed, method=args.method)

    path = Path(args.out) if args.out else run_dir / "samples" / f"sample_{args.prior}_seed{seed}.png"
    save_image_grid(out.images, path, nrow=grid_columns(n))
    print(f"wrote {path}: {n} samples from the {args.prior} prior (T={temperature}, top-k={top_k}, seed={seed})")
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


def main(argv=None) -> int:
    args = parse(argv)
    if args.command == "run":
        command_run(args)
    elif args.command == "sample":
        command_sample(args)
    else:
        from .report import write_report

        metrics = write_report(Path(args.run))
        print(f"wrote {Path(args.run) / 'report' / 'index.html'} (learned prior: "
              f"{metrics['bits_per_code']['learned']:.3f} bits per code)")
    return 0


if __name__ == "__main__":
    run_main(main)
