"""``vqprior compare``: two finished runs side by side, and the refusal of unfinished or stale ones."""

from __future__ import annotations

import json

import pytest

from tests.helpers import FAST, edit_code_file, one_line_error, private_copy, run_cli


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    """The tiny job with the transformer prior (and the FAST settings), as a user runs it."""
    run = tmp_path_factory.mktemp("compare") / "transformer"
    settings = [*FAST, "stage2.architecture=transformer", "stage2.heads=2"]
    result = run_cli("pipeline", "run", "--config", "tiny", "--run", str(run),
                     *[arg for item in settings for arg in ("--set", item)])
    assert result.returncode == 0, result.stderr
    return run


def test_compare_puts_both_runs_numbers_settings_and_samples_on_one_page(fast_run, transformer_run, tmp_path, cli):
    result = cli("pipeline", "compare", str(fast_run), str(transformer_run), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    html = (tmp_path / "cmp" / "compare.html").read_text()
    for run in (fast_run, transformer_run):
        metrics = json.loads((run / "report" / "metrics.json").read_text())
        bits = f"{metrics['bits_per_code']['learned']:.3f}"
        fd = f"{metrics['sample_quality']['fd_learned']:.2f}"
        assert bits in markdown and fd in markdown and bits in html and fd in html
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert "| pixelcnn |" in table[1] and "| transformer |" in table[2]  # header, then one row per run
    settings = markdown.split("Settings that differ:")[1]
    assert "| stage2.architecture | pixelcnn | transformer |" in settings
    assert "stage2.heads" in settings and "run.dir" not in settings  # only what differs, not where runs live
    assert html.count("<figure>") == 2 and "data:image/png;base64," in html  # both runs' samples, inlined


def test_a_run_compared_with_itself_has_no_differing_settings(fast_run, tmp_path):
    from pipeline.compare import compare

    _, table = compare([fast_run], tmp_path / "one")
    assert "The runs' settings are the same." in table.read_text()


def test_unfinished_and_stale_runs_are_refused_in_one_line_naming_them(fast_run, tiny_run, tmp_path, cli):
    stale = private_copy(fast_run, tmp_path / "stale")
    with edit_code_file(stale / "codes" / "train.h5") as f:  # quality.json was computed from other codes
        f["codes"][0, 0, 0] = (int(f["codes"][0, 0, 0]) + 1) % 32
    result = cli("pipeline", "compare", str(fast_run), str(stale), str(tiny_run), "--out", str(tmp_path / "cmp"))
    message = one_line_error(result)
    assert f"{stale}: " in message and "out of date" in message
    assert f"{tiny_run}: " in message and "missing" in message
    assert f"{fast_run}: " not in message
    assert not (tmp_path / "cmp").exists()  # nothing written
