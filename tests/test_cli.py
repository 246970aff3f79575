"""The command line and the README's promises."""

import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from tinytf.apps.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_a_png(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    png = tmp_path / "attention.png"
    image = mpimg.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0.01
    assert str(png) in capsys.readouterr().out


def test_cli_help_and_unknown_command():
    assert main([]) == 1
    out = subprocess.run([sys.executable, "-m", "tinytf", "nonsense"], capture_output=True, text=True)
    assert out.returncode != 0 and "invalid choice" in out.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in re.findall(r"^pip install.*$", quick, re.M)]
    assert len(commands) == 2, "the Quick start has exactly two commands"
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^pip install .*pytest' README.md" in ci


def test_readme_train_look_measure_snippet_runs(tmp_path, monkeypatch):
    """The README's Python example runs as written (with fewer steps)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Train, look, measure", 1)[1]
    section = section.split("\n### ", 1)[0]
    code, side_by_side = (block.split("```", 1)[0] for block in section.split("```python")[1:3])
    assert "steps=300" in code and "steps=300" in side_by_side
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code.replace("steps=300", "steps=20"), "README.md", "exec"), namespace)
    assert (tmp_path / "maps.png").is_file()
    assert namespace["history"].last("loss") < namespace["history"]["loss"][0]
    # then: three seeds side by side, each as it trains alone
    exec(compile(side_by_side.replace("steps=300", "steps=20"), "README.md", "exec"), namespace)
    histories = namespace["histories"]
    assert len(histories) == 3 and all(h.final_step == 20 for h in histories)
    alone = namespace["train"](1)
    assert list(alone["loss"]) == list(histories[1]["loss"])


def test_bench_attention_measures_every_path_in_its_own_process(capsys):
    """A smoke test of the benchmark (no timing is asserted): every path runs and reports its peak memory."""
    assert main(["--quiet", "bench", "attention", "--lengths", "64", "--heads", "4", "--kv-heads", "2",
                 "--head-dim", "8", "--repeats", "1", "--backward", "--variant", "softmax1", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in result["rows"]] == ["dense", "flash", "jax.nn", "variant softmax1"]
    assert all(r["seconds"] > 0 and r["peak_bytes"] is not None for r in result["rows"])
    assert result["kv_cache"]["saving"] == 2.0


def test_bench_lessons_runs_each_lesson_cold_then_warm(monkeypatch, capsys):
    """Wiring only (no timing asserted): two runs per lesson sharing one new cache folder, failures exit 1."""
    from tinytf.apps import bench_lessons

    calls = []

    def fake_run(lesson_id, cache, out):
        calls.append((lesson_id, cache))
        return 0.5 * len(calls), 3 if lesson_id == "positions" and len(calls) == 4 else 0

    monkeypatch.setattr(bench_lessons, "_run_once", fake_run)
    assert main(["--quiet", "bench", "lessons", "rank-collapse", "positions"]) == 1  # a claim failed in one run
    assert [c[0] for c in calls] == ["rank-collapse", "rank-collapse", "positions", "positions"]
    assert calls[0][1] == calls[1][1] != calls[2][1] and not calls[0][1].exists()  # cold cache is new each time
    out = capsys.readouterr().out
    assert "rank-collapse" in out and "[0, 3]" in out
    with pytest.raises(SystemExit, match="unknown lesson 'nope'"):
        main(["--quiet", "bench", "lessons", "nope"])


@pytest.mark.slow
def test_bench_lessons_real_run_of_the_shortest_lesson(capsys):
    assert main(["--quiet", "bench", "lessons", "rank-collapse", "--json"]) == 0
    import json

    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["cold_s"] > 0 and row["warm_s"] > 0 and row["exit_codes"] == [0, 0]
