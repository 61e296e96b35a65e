"""User errors carry meaning (what, which file, which step fixes it); the entry points word the fix."""

from __future__ import annotations

import pytest

from data.cli import command_for, render
from data.codes import read_code_info
from data.errors import BadValue, Fix, MissingFile, RunConflict, UserError
from data.rundir import RunPaths, resolve_config


def test_a_plain_user_error_is_its_message():
    assert str(UserError("something is wrong")) == "something is wrong"
    assert render(UserError("something is wrong")) == "something is wrong"


def test_the_api_message_names_the_step_and_the_command_line_the_command(tmp_path):
    run = tmp_path / "run"
    RunPaths(run).config.parent.mkdir()
    RunPaths(run).config.write_text("{}")
    with pytest.raises(MissingFile) as err:
        read_code_info(RunPaths(run).codes("val"))
    error = err.value
    assert error.path == RunPaths(run).codes("val") and error.fix is Fix.ENCODE and error.run == run
    assert str(error) == f"code file not found: {RunPaths(run).codes('val')}; encode the run's images"
    assert render(error) == f"{error}: `python -m stage1_vqvae encode --run {run}`"
    assert render(error, console=True) == f"{error}: `vqprior stage1 encode --run {run}`"


@pytest.mark.parametrize("fix", [f for f in Fix if command_for(f) is not None])
def test_every_command_fix_has_both_wordings(fix):
    console, module = command_for(fix, "R", console=True), command_for(fix, "R")
    assert console.startswith("vqprior ") and module.startswith("python -m ")
    assert console.split(" --")[1:] == module.split(" --")[1:]  # the same flags either way


def test_a_fix_that_is_a_flag_of_the_same_command_is_worded_as_that_flag(tmp_path):
    (RunPaths(tmp_path).stage1 / "x").parent.mkdir()
    (RunPaths(tmp_path).stage1 / "x").write_text("")
    with pytest.raises(RunConflict) as err:
        resolve_config(tmp_path, None, [], resume=False)
    assert str(err.value).endswith("already holds output; resume it, or use a new run directory")
    assert render(err.value).endswith("already holds output; pass --resume to continue it, or choose a new --run")


def test_a_bad_value_names_the_argument_in_the_api_and_the_flag_on_the_command_line():
    error = BadValue("top_k", "must lie in [1, 8]", 9, advice="sample among fewer codes")
    assert str(error) == "top_k must lie in [1, 8], got 9; sample among fewer codes"
    assert render(error) == "--top-k must lie in [1, 8], got 9; sample among fewer codes"
