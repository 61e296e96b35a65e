"""Mistakes a user can fix (bad config, missing or damaged file, mismatch), as structured data.

Library code says *what* is wrong (``problem``), *which file* (``path``) and *what would fix
it*: a step of the workflow (``fix``, a ``Fix``) and free advice in the API's terms
(``advice``). It never names a command or a flag, since it does not know how it was called.
``str(error)`` is a complete sentence for users of the Python API:

    code file not found: runs/a/codes/val.h5; encode the run's images

The command-line entry points (``data.cli.render``) print the same error as one ``error:`` line
in which the fix is the command the user would type, through the entry point they used (the
console command or ``python -m``) with the run directory filled in, and exit with code 2.

Everything that is not a ``UserError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum
import os
from typing import Optional


class Fix(enum.Enum):
    """A step of the workflow that would fix an error; the entry point words it as a command or a flag."""
    TRAIN_STAGE1 = "train stage 1"
    ENCODE = "encode the run's images"
    ENCODE_AGAIN = "encode the run's images again, replacing the code files"
    TRAIN_STAGE2 = "train the prior"
    EVALUATE = "evaluate the priors"
    RUN = "run the whole job"
    RESUME = "resume the run, which redoes what is out of date"
    EXPORT = "export a trained run's pipeline"
    FID = "measure the Inception FID again"
    NEW_RUN = "use a new run directory"
    RESUME_OR_NEW_RUN = "resume it, or use a new run directory"


class UserError(Exception):
    """A problem with the user's input: ``problem`` (words), ``path`` (the file concerned) and how to fix it.

    ``fix`` is a workflow step, ``advice`` free text in the API's terms ("delete it",
    "raise stage2.steps"), ``run`` the run directory a rendered command should name.
    """

    def __init__(self, problem: str, *, path: Optional[os.PathLike | str] = None, fix: Optional[Fix] = None,
                 advice: Optional[str] = None, run: Optional[os.PathLike | str] = None):
        self.problem, self.path, self.fix, self.advice, self.run = problem, path, fix, advice, run
        super().__init__(self.sentence())

    def sentence(self, fix_words: Optional[str] = None) -> str:
        """The message: problem; advice; the fix (as ``fix_words`` when the caller words it, else as a step)."""
        fix = fix_words if fix_words is not None else (self.fix.value if self.fix else None)
        return "; ".join(part for part in (self.problem, self.advice, fix) if part)


class MissingFile(UserError):
    """A file a step needs does not exist (``path``); ``fix`` is the step that makes it."""


class BadFile(UserError):
    """A file exists but cannot be used: damaged, of another kind or version, or of another model."""


class OutOfDate(UserError):
    """A derived file no longer describes the run's models; ``fix`` refreshes it."""


class RunConflict(UserError):
    """The run directory cannot be used this way: in use, already holding output, or a frozen setting."""


class BadValue(UserError):
    """An argument outside its rule: ``name`` is the API's name for it (the entry point names its flag).

    ``str()`` reads "n must be at least 1, got 0"; on the command line "--n must be at least 1, got 0".
    """

    def __init__(self, name: str, rule: str, value=None, **kwargs):
        self.name, self.rule, self.value = name, rule, value
        super().__init__(self.worded(name), **kwargs)

    def worded(self, name: str) -> str:
        return f"{name} {self.rule}" + (f", got {self.value}" if self.value is not None else "")
