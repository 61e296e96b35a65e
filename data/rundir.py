"""The run directory: where each file of a run lives, who may write it, and which config it holds.

    DIR/config.yaml                    the resolved config (written once the run has really begun)
    DIR/stage1/  checkpoint.pt  metrics.jsonl  summary.json  reconstructions.png
    DIR/codes/   train.h5  val.h5
    DIR/stage2/  checkpoint.pt  metrics.jsonl  summary.json  bits_per_code.json
    DIR/classifier/checkpoint.pt
    DIR/samples/*.png   DIR/report/  quality.json  nearest_{typical,closest}.png  [inception_fid.json]
                                  metrics.json  index.html

``resolve_config`` is the one rule every command uses to get a run's config: the saved
``config.yaml`` (when there is one and the command continues the run), then the given config
file, then the overrides; settings a stage has already used may not change (an error that
leaves ``config.yaml`` untouched), later stages may (resuming with ``stage2.steps=3000``
continues a finished prior).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .config import Config, VQVAEConfig
from .config_files import load_config, save_config
from .errors import Fix, MissingFile, RunConflict, UserError


@dataclass(frozen=True)
class RunPaths:
    """Every file of a run directory, by what it holds: the one place that names them."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")
    lock = property(lambda self: self.root / ".lock")
    stage1 = property(lambda self: self.root / "stage1")
    stage1_checkpoint = property(lambda self: self.stage1 / "checkpoint.pt")
    stage1_summary = property(lambda self: self.stage1 / "summary.json")
    stage1_metrics = property(lambda self: self.stage1 / "metrics.jsonl")
    reconstructions = property(lambda self: self.stage1 / "reconstructions.png")
    codes_dir = property(lambda self: self.root / "codes")
    stage2 = property(lambda self: self.root / "stage2")
    stage2_checkpoint = property(lambda self: self.stage2 / "checkpoint.pt")
    stage2_summary = property(lambda self: self.stage2 / "summary.json")
    stage2_metrics = property(lambda self: self.stage2 / "metrics.jsonl")
    bits = property(lambda self: self.stage2 / "bits_per_code.json")
    classifier_checkpoint = property(lambda self: self.root / "classifier" / "checkpoint.pt")
    samples = property(lambda self: self.root / "samples")
    report = property(lambda self: self.root / "report")
    quality = property(lambda self: self.report / "quality.json")
    inception_fid = property(lambda self: self.report / "inception_fid.json")
    metrics = property(lambda self: self.report / "metrics.json")
    index = property(lambda self: self.report / "index.html")
    neighbours = property(lambda self: {k: self.report / f"nearest_{k}.png" for k in ("typical", "closest")})

    def codes(self, split: str) -> Path:
        return self.codes_dir / f"{split}.h5"

    def sample_grid(self, prior: str) -> Path:
        """``samples/<prior>.png``: the grid of one prior (learned, marginal, uniform)."""
        return self.samples / f"{prior}.png"

    def temperature_grid(self, temperature: float) -> Path:
        """``samples/temperature_<T>.png``: the learned prior's grid of the temperature sweep."""
        return self.samples / f"temperature_{float(temperature):g}.png"

    def temperature_grids(self, temperatures: list) -> list[tuple[float, Path]]:
        """(T, grid) for each T of the sweep whose grid exists."""
        grids = [(float(t), self.temperature_grid(t)) for t in temperatures]
        return [(t, path) for t, path in grids if path.is_file()]

    def class_grid(self, label: int) -> Path:
        """``samples/class_<c>.png``: samples of one class from a class-conditional prior."""
        return self.samples / f"class_{label}.png"

    def class_grids(self) -> list[tuple[int, Path]]:
        """The existing per-class grids, by class index."""
        grids = [(p.stem.removeprefix("class_"), p) for p in self.samples.glob("class_*.png")]
        return sorted((int(c), p) for c, p in grids if c.isdigit())

    def is_own_sample_grid(self, path: Path, priors: tuple[str, ...]) -> bool:
        """Whether ``path`` (relative to the run) is a grid the run itself writes into ``samples/``."""
        return (len(path.parts) == 2 and path.parts[0] == self.samples.name
                and (path.stem in priors or path.name.startswith(("temperature_", "class_"))))

    def user_sample(self, prior: str, seed: int) -> Path:
        """Where a sampling command puts its grid when not told: ``samples/sample_<prior>_seed<S>.png``."""
        return self.samples / f"sample_{prior}_seed{seed}.png"

    def plot(self, name: str) -> Path:
        """A picture of the report: ``report/<name>.png``."""
        return self.report / f"{name}.png"

    def name(self, path: Path) -> str:
        """``path`` relative to the run directory, as provenance records it (``stage1/checkpoint.pt``)."""
        return Path(path).relative_to(self.root).as_posix()

    @staticmethod
    def holding(path: str | os.PathLike) -> Optional[Path]:
        """The run directory a file lies in (the nearest folder above it with a config), or None."""
        return next((folder for folder in Path(path).parents if RunPaths(folder).config.is_file()), None)

    def describe(self, name: str) -> str:
        """What the run file ``name`` (as ``name()`` gives it) is called in messages."""
        words = {self.config: "config", self.stage1_checkpoint: "stage-1 checkpoint",
                 self.stage2_checkpoint: "stage-2 checkpoint", self.classifier_checkpoint: "feature classifier",
                 self.codes("train"): "train codes", self.codes("val"): "val codes"}
        return next((what for path, what in words.items() if self.name(path) == name), name)


# ---------------------------------------------------------------- resolving a run's config

HOW_DATA_IS_READ = ("download", "cache_dir", "workers")  # data keys that never change the images


def resolve_config(run_dir: str | os.PathLike, config_file: Optional[str], overrides: list[str],
                   resume: bool, first_stage: str = "stage1") -> Config:
    """The config a command runs ``run_dir`` with; nothing is written here.

    ``first_stage`` is the stage the command trains first: a ``stage1`` command starts from
    ``config_file`` (or the shipped default) unless it resumes; a ``stage2`` command always
    builds on the run's saved config, since stage 1 made its codes. Without ``resume``, a
    stage that already holds output is refused.
    """
    paths = RunPaths(run_dir)
    continues = paths.config.is_file() and (resume or first_stage == "stage2")
    if first_stage == "stage2":
        run_config(paths)  # the error for a folder that is not a run
    if not resume:
        refuse_existing_output(paths, first_stage)
    if not continues:
        return load_config(config_file or "default", overrides)
    saved = run_config(paths)
    config = load_config(config_file, overrides, base=saved.to_dict())
    check_changes(paths, saved, config)
    return config


def run_config(run: RunPaths | str | os.PathLike) -> Config:
    """The config a begun run saved: what commands that only read a run use."""
    paths = run if isinstance(run, RunPaths) else RunPaths(run)
    if not paths.config.is_file():
        raise MissingFile(f"{paths.root} is not a run directory (no {paths.config.name})", path=paths.config,
                          fix=Fix.TRAIN_STAGE1, run=paths.root)
    return load_config(paths.config)


def refuse_existing_output(paths: RunPaths, first_stage: str) -> None:
    stage_dir = paths.stage1 if first_stage == "stage1" else paths.stage2
    if stage_dir.is_dir() and any(stage_dir.iterdir()):
        raise RunConflict(f"{stage_dir} already holds output", path=stage_dir, fix=Fix.RESUME_OR_NEW_RUN)


def check_changes(paths: RunPaths, saved: Config, config: Config) -> None:
    """Refuse changes to settings that a begun or completed stage has already used."""
    frozen = {}
    if paths.stage1_checkpoint.is_file() or paths.stage1_summary.is_file():
        stage1_done = paths.stage1_summary.is_file()
        why = f"stage 1 is {'complete' if stage1_done else 'under way'}"
        keys = [f"data.{k}" for k in fields_of(config.data) if k not in HOW_DATA_IS_READ] + ["run.seed"]
        keys += [f"stage1.{k}" for k in (fields_of(config.stage1) if stage1_done else fields_of(VQVAEConfig))]
        frozen.update(dict.fromkeys(keys, why))
    if paths.stage2_checkpoint.is_file():
        keys = (*fields_of(saved.stage2.model_config()), "architecture", "conditional", "marginal_smoothing",
                "ema_decay")
        frozen.update({f"stage2.{k}": "the stage-2 checkpoint was trained with it" for k in keys})
    for key, why in frozen.items():
        before, after = lookup(saved, key), lookup(config, key)
        if before != after:
            raise RunConflict(f"cannot change {key} ({before!r} -> {after!r}) when resuming {paths.root}: {why}",
                              path=paths.config, fix=Fix.NEW_RUN)
    check_stage2_continuation(paths, saved, config)


def check_stage2_continuation(paths: RunPaths, saved: Config, config: Config) -> None:
    """A finished prior continues only to more steps; without them, its settings would go unused."""
    done = read_summary_steps(paths.stage2_summary)
    if done is None:
        return
    target = prior_steps(paths, config)
    if target < done:
        raise RunConflict(f"stage2.steps can only grow when resuming: the prior in {paths.stage2} has trained "
                          f"{done} steps, got {config.stage2.steps} (training {target} with stage2.min_epochs)")
    if target == done:
        changed = [f"stage2.{k}" for k in fields_of(config.stage2)
                   if getattr(saved.stage2, k) != getattr(config.stage2, k)]
        if changed:
            raise RunConflict(f"cannot change {', '.join(changed)}: the prior in {paths.stage2} is complete at {done} "
                              "steps", path=paths.stage2, advice="raise stage2.steps to continue it with new settings",
                              fix=Fix.NEW_RUN)


def prior_steps(paths: RunPaths, config: Config) -> int:
    """The steps the run's prior trains with this config (``stage2.steps``, or more for ``min_epochs``)."""
    from .codes import read_code_info

    grids = read_code_info(paths.codes("train")).num_codes if paths.codes("train").is_file() else 0
    return config.stage2.total_steps(grids)


def read_summary_steps(path: Path) -> Optional[int]:
    try:
        return int(json.loads(path.read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fields_of(obj_or_cls) -> list[str]:
    return [f.name for f in dataclasses.fields(obj_or_cls)]


def lookup(config: Config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def commit_config(run_dir: str | os.PathLike, config: Config) -> None:
    """Save ``config`` as the run's ``config.yaml`` (once a stage has really begun), if it changed."""
    path = RunPaths(run_dir).config
    if not path.is_file() or load_config(path) != config:
        save_config(config, path)


# ---------------------------------------------------------------- one writer per run directory

_held: dict[Path, int] = {}  # run directories this process has locked, and how many times


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, main_process: bool = True) -> Iterator[None]:
    """Hold the advisory lock ``DIR/.lock`` while writing into a run; a second writer fails at once.

    ``flock`` ends with its process, so a lock left by a killed command never blocks. Re-entrant
    within one process (the pipeline's steps call each other), and taken by the main process
    only under a multi-process launch (only it writes). A run directory that this call created
    and that holds nothing else when it ends is removed again, so a start that failed on a user
    error leaves nothing behind and the same command can simply be retried.
    """
    root = Path(run_dir).resolve()
    if not main_process:
        yield
        return
    if root in _held:
        _held[root] += 1
        try:
            yield
        finally:
            _held[root] -= 1
        return
    created = [d for d in (root, *root.parents) if not d.exists()]  # the folders this call makes, deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run directory {root}: {exc.strerror}") from None
    if not root.is_dir():
        raise RunConflict(f"{root} is not a directory", path=root, fix=Fix.NEW_RUN)
    try:
        fd = os.open(RunPaths(root).lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot write into the run directory {root}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunConflict(f"run directory in use (pid {owner}): {root}", path=root,
                          advice="wait for that command to end") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[root] = 1
    try:
        yield
    finally:
        del _held[root]
        if created and list(root.iterdir()) == [RunPaths(root).lock]:
            RunPaths(root).lock.unlink()
            for folder in created:  # nothing was written: remove the folders this call made
                with contextlib.suppress(OSError):
                    folder.rmdir()
        os.close(fd)
