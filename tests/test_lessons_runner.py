"""The lesson runner: claims compute `holds`, metrics.json has the documented shape, runs never overwrite,
lessons run as scripts and as notebooks (the notebook plumbing here; the lessons themselves in test_lessons.py)."""

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from tinytf.apps.claims import Claim, LessonResult
from tinytf.apps.cli import main
from tinytf.apps.lessons import (LESSONS, format_summary, latest_run, lessons_dir, main_for, mark_latest,
                                 new_run_dir, run_lesson, summary_markdown)
from tinytf.apps.notebook import MissingNotebookTools, inject_parameters, read_lesson, tidy_streams


def test_claim_holds_is_computed():
    assert Claim("a", "x < 1", 0.5, "<", 1).holds
    assert not Claim("b", "x > 1", 0.5, ">", 1).holds
    assert Claim("c", "x >= 1", 1.0, ">=", 1).holds
    assert not Claim("d", "nan never holds", float("nan"), "<", 1).holds
    with pytest.raises(ValueError, match="op must be one of"):
        Claim("e", "bad", 1, "==", 1)


def fake_run(quick, seed, out_dir, variant=None):
    result = LessonResult()
    result.metrics["baseline"] = {"loss": 1.5 + seed}
    result.metrics["fixed"] = {"loss": 0.5}
    result.claim("fix", "the fix lowers the loss", result.metrics["fixed"]["loss"] - result.metrics["baseline"]["loss"],
                 "<", 0)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(out_dir / "curve.png")
    plt.close(fig)
    result.figures.append("curve.png")
    return result


def test_run_lesson_writes_metrics_json(tmp_path):
    record = run_lesson("positions", quick=True, seed=3, out=tmp_path, run_fn=fake_run, command="tinytf lesson x")
    saved = json.loads((tmp_path / "positions" / "latest" / "metrics.json").read_text())
    assert saved == record
    assert set(saved) >= {"lesson", "title", "seed", "quick", "variant", "runtime_s", "metrics", "claims", "figures",
                          "skipped", "notes", "command", "started", "folder", "versions"}
    assert saved["command"] == "tinytf lesson x" and saved["folder"].endswith("_seed3_quick")
    import flax
    import jax
    import numpy

    assert saved["versions"]["jax"] == jax.__version__ and saved["versions"]["flax"] == flax.__version__
    assert saved["versions"]["numpy"] == numpy.__version__
    assert set(saved["versions"]) >= {"tinytf", "optax", "python", "platform"}
    assert saved["claims"][0] == {"id": "fix", "text": "the fix lowers the loss", "value": -4.0, "op": "<",
                                  "threshold": 0.0, "holds": True}
    assert "[PASS] the fix lowers the loss" in format_summary(record)


def test_summary_keeps_long_metric_names_and_wraps():
    names = [f"a rather long metric name number {i}" for i in range(6)]
    record = {"title": "T", "lesson": "x", "seed": 0, "quick": True, "runtime_s": 1.0, "variant": None,
              "metrics": {"baseline": {n: float(i) for i, n in enumerate(names)}, "fixed": {"loss": 0.25}},
              "claims": [], "figures": []}
    text = format_summary(record, width=80)
    assert all(f"{n} = {i:.4g}" in text for i, n in enumerate(names))  # nothing truncated
    assert "loss = 0.25" in text and max(len(line) for line in text.splitlines()) <= 80


def test_run_lesson_rejects_missing_figures_and_bad_variant(tmp_path):
    def no_png(quick, seed, out_dir, variant=None):
        return LessonResult(figures=["missing.png"])

    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_lesson("positions", out=tmp_path, run_fn=no_png)
    assert not LESSONS["positions"].variant
    with pytest.raises(ValueError, match="does not take --variant"):
        run_lesson("positions", out=tmp_path, variant="softmax1", run_fn=fake_run)


# ------------------------------------------------------------------------- run folders
def test_runs_never_overwrite_and_latest_points_to_the_newest(tmp_path):
    first = run_lesson("positions", quick=True, seed=0, out=tmp_path, run_fn=fake_run)
    first_dir = latest_run("positions", tmp_path)
    second = run_lesson("positions", quick=True, seed=0, out=tmp_path, run_fn=fake_run)  # same second, same seed
    second_dir = latest_run("positions", tmp_path)
    assert first_dir != second_dir and first["folder"] != second["folder"]
    assert second_dir.name == second["folder"] and json.loads((first_dir / "metrics.json").read_text()) == first
    runs = sorted(p.name for p in (tmp_path / "positions").iterdir() if not p.name.startswith("latest"))
    assert runs == sorted([first["folder"], second["folder"]])
    assert (tmp_path / "positions" / "latest").is_symlink()
    assert (tmp_path / "positions" / "latest.txt").read_text().strip() == second["folder"]
    os.unlink(tmp_path / "positions" / "latest")  # no links: latest.txt still finds it
    assert latest_run("positions", tmp_path) == second_dir


def test_run_folder_names_and_explicit_run_dir(tmp_path):
    a = new_run_dir("dilution", out=tmp_path, seed=4, quick=False, variant="my_mod:my attention")
    b = new_run_dir("dilution", out=tmp_path, seed=4, quick=False, variant="my_mod:my attention")
    assert re.fullmatch(r"\d{8}-\d{6}_seed4_full_my_mod-my-attention", a.name) and b.name != a.name
    assert latest_run("dilution", tmp_path) is None  # nothing finished yet
    mark_latest(b)
    assert latest_run("dilution", tmp_path) == b.resolve()
    full = tmp_path / "mine"
    (full / "old.txt").parent.mkdir()
    (full / "old.txt").write_text("keep")
    with pytest.raises(ValueError, match="is not empty: a run never overwrites another"):
        run_lesson("positions", run_dir=full, run_fn=fake_run)
    assert (full / "old.txt").read_text() == "keep" and not (full / "metrics.json").exists()
    record = run_lesson("positions", run_dir=tmp_path / "fresh" / "here", run_fn=fake_run)
    assert json.loads((tmp_path / "fresh" / "here" / "metrics.json").read_text()) == record
    assert not (tmp_path / "fresh" / "latest").exists()  # an explicit folder is not a runs root


def test_summary_shows_skipped_conditions_and_notes():
    def skips(quick, seed, out_dir, variant=None):
        result = fake_run(quick, seed, out_dir, variant)
        result.skipped.append("sigmoid: three times slower (run full mode to see it)")
        result.notes.append("streaming is measured on the baseline only")
        return result

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record = run_lesson("positions", quick=True, out=tmp, run_fn=skips)
    assert record["skipped"] == ["sigmoid: three times slower (run full mode to see it)"]
    text = format_summary(record)
    assert "not run in this mode:\n  - sigmoid: three times slower (run full mode to see it)" in text
    assert "notes:\n  - streaming is measured on the baseline only" in text
    md = summary_markdown(record)
    assert "| PASS | the fix lowers the loss | -1 | < 0 |" in md
    assert "| condition | loss |" in md and "| fixed | 0.5 |" in md and "- sigmoid: three times slower" in md


# ------------------------------------------------------------- scripts and notebooks
def test_main_for_as_a_script_reads_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["02_positions.py", "--quick", "--seed", "2", "--out", str(tmp_path)])
    record = main_for("positions", fake_run, quick=None, seed=0, out="unused")
    assert record["quick"] and record["seed"] == 2 and record["command"].startswith("python 02_positions.py --quick")
    assert "[PASS] the fix lowers the loss" in capsys.readouterr().out
    # the parameters-cell values are the defaults; $TINYTF_QUICK=1 picks quick mode when quick is None
    monkeypatch.setattr(sys, "argv", ["02_positions.py"])
    monkeypatch.setenv("TINYTF_QUICK", "1")
    record = main_for("lessons/02_positions.py", fake_run, seed=5, out=tmp_path)  # a file path works too
    assert record["quick"] and record["seed"] == 5
    monkeypatch.setenv("TINYTF_QUICK", "0")
    assert not main_for("positions", fake_run, out=tmp_path)["quick"]


def test_main_for_exits_3_when_a_claim_fails(tmp_path, monkeypatch):
    def fails(quick, seed, out_dir, variant=None):
        result = LessonResult()
        result.claim("x", "never", 1.0, "<", 0)
        return result

    monkeypatch.setattr(sys, "argv", ["02_positions.py", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main_for("positions", fails)
    assert exit_info.value.code == 3


def test_every_lesson_has_a_parameters_cell_and_runs_without_its_file_name():
    for info in LESSONS.values():
        path = lessons_dir() / info.file
        text = path.read_text()
        assert "__file__" not in text, f"{info.file} uses __file__ (undefined in a notebook)"
        assert "progress=False" not in text, f"{info.file} hides training progress"
        nb = read_lesson(path)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{info.file}: one cell tagged parameters"
        names = set(re.findall(r"^(\w+) = ", tagged[0].source, re.M))
        assert names == {"quick", "seed", "variant", "out", "run_dir"}, info.file
        last = [c for c in nb.cells if c.cell_type == "code"][-1].source
        assert f'main_for("{info.id}", run, quick=quick' in last, info.file


def test_parameters_are_injected_after_the_parameters_cell():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1"),
                                         nbformat.v4.new_code_cell("quick = None", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("run()")])
    inject_parameters(nb, {"quick": True, "variant": None, "run_dir": "/x y"})
    assert [c.source.splitlines()[-1] for c in nb.cells] == ["a = 1", "quick = None", "run_dir = '/x y'", "run()"]
    assert nb.cells[2].source.splitlines()[1:] == ["quick = True", "variant = None", "run_dir = '/x y'"]
    del nb.cells[1]
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        inject_parameters(nb, {"quick": True})


def test_tidy_streams_keeps_final_lines_of_progress_bars():
    import nbformat

    bar = "fit 1:  10%|#  | 1/10\rfit 1: 100%|###| 10/10\r            \r[x] fit: done in 1 s\n"
    cell = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=bar),
        nbformat.v4.new_output("stream", name="stderr", text="\r      \r"),
        nbformat.v4.new_output("stream", name="stdout", text="table\n\nrow\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    tidy_streams(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["[x] fit: done in 1 s\n", "table\n\nrow\n"]


def test_cli_typo_and_missing_notebook_tools(tmp_path, monkeypatch, capsys):
    assert main(["lesson", "atention-sinks", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown lesson 'atention-sinks' (did you mean attention-sinks?)" in err and "rank-collapse" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbclient" else real(name, *a))
    assert main(["lesson", "rank-collapse", "--quick", "--notebook", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs nbclient, which are not installed: pip install 'tinytf[notebooks]'" in err
    assert main(["course", "build", "--out", str(tmp_path / "site")]) == 2
    assert "building the course needs nbclient" in capsys.readouterr().err
    with pytest.raises(MissingNotebookTools):
        read_lesson(lessons_dir() / LESSONS["rank-collapse"].file)


def test_course_build_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("mine")
    assert main(["course", "build", "--out", str(tmp_path / "site"), "--from-runs", str(tmp_path)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "site" / "index.html").read_text() == "mine"
    assert main(["course", "build", "--out", str(tmp_path / "new"), "--only", "rank-collapse", "--from-runs",
                 str(tmp_path)]) == 2
    assert "no run of 'rank-collapse' under" in capsys.readouterr().err


def test_quiet_goes_before_or_after_the_command():
    from tinytf.apps.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["lesson", "positions", "--quiet"]).quiet
    assert parser.parse_args(["--quiet", "lesson", "positions"]).quiet
    assert not parser.parse_args(["lesson", "positions"]).quiet
    assert parser.parse_args(["bench", "attention", "--quiet"]).quiet
    assert parser.parse_args(["course", "build", "--quiet"]).quiet


def test_nothing_outside_the_lessons_points_outside_the_repository():
    """The package, tests, exercises and README carry what a reader needs (issue 15, item 4).

    lessons/ is checked by each lesson's own references cell (the lesson engineers' part);
    extend `roots` with "lessons" once every lesson carries its references.
    """
    root = Path(__file__).resolve().parents[1]
    roots = ["tinytf", "tests", "exercises", "README.md", "pyproject.toml", ".ci"]
    bad = []
    for name in roots:
        paths = [root / name] if (root / name).is_file() else sorted((root / name).rglob("*"))
        for path in paths:
            if path.is_file() and path.suffix in ("", ".py", ".md", ".toml", ".txt") and path != Path(__file__):
                for i, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                    if "PHENOMENA" in line or "../shared" in line:
                        bad.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not bad, "points outside the repository:\n" + "\n".join(bad)
