"""Every lesson runs as a notebook in quick mode, and every claim it makes holds (DESIGN.md section 8).

One run per lesson is the test: jupytext converts the lesson file, nbclient executes it in a
fresh kernel with quick mode injected after its `parameters` cell (papermill's convention),
exactly as `tinytf lesson ID --quick --notebook` does. Then every claim is checked from the
run's metrics.json, every figure in the run folder, and every figure inline in the executed
notebook. The course site is then built from those executed notebooks (no second run).

Multi-seed checks of the same claims run as `python -m tinytf lesson ID --quick --seed S` and are
marked slow: `python -m pytest -m slow`. Lessons run with the user's XLA flags, not the tests'
fast-compile ones (see conftest.py).
"""

import base64
import json
import os
import subprocess
import sys

import matplotlib.image as mpimg
import nbformat
import pytest

from tinytf.apps.course import build_course
from tinytf.apps.lessons import LESSONS, available_lessons, latest_run, run_lesson_notebook
from tinytf.progress import quiet

LESSON_IDS = [info.id for info in available_lessons()]
EXECUTED = {}  # lesson id -> run folder of its executed notebook, for the course site test


def check_record(record, out_dir):
    assert record["claims"], "a lesson must make at least one measured claim"
    failed = [f"{c['text']}: {c['value']:.4g} {c['op']} {c['threshold']:g}" for c in record["claims"] if not c["holds"]]
    assert not failed, "claims that do not hold:\n" + "\n".join(failed)
    assert json.loads((out_dir / "metrics.json").read_text()) == record
    for name in record["figures"]:
        image = mpimg.imread(out_dir / name)
        assert image.shape[0] >= 200 and image.shape[1] >= 200 and image.std() > 0.01, name


def inline_pngs(notebook) -> list[str]:
    return ["".join(out["data"]["image/png"].split()) for cell in notebook.cells
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


@pytest.fixture(scope="session")  # not "module": conftest runs the lessons first, the course test later
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def run_as_notebook(lesson_id, runs_root):
    with quiet():  # the kernel runs quiet too: the notebook keeps what the lesson shows, not progress bars
        record, run_dir, notebook = run_lesson_notebook(lesson_id, quick=True, seed=0, out=runs_root, timeout=900)
    EXECUTED[lesson_id] = run_dir
    return record, run_dir, notebook


@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_lesson_runs_as_a_notebook_and_its_claims_hold(lesson_id, runs_root, user_xla_flags):
    record, run_dir, notebook = run_as_notebook(lesson_id, runs_root)
    assert record["quick"] and record["seed"] == 0 and record["lesson"] == lesson_id
    check_record(record, run_dir)
    assert latest_run(lesson_id, runs_root) == run_dir and notebook.parent == run_dir
    nb = nbformat.read(notebook, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "quick = True" in injected[0].source
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    shown = inline_pngs(nb)
    for name in record["figures"]:  # shown inline, byte for byte the saved file
        assert base64.b64encode((run_dir / name).read_bytes()).decode() in shown, f"{name} is not shown inline"


def test_course_site_from_the_executed_notebooks(runs_root, tmp_path, user_xla_flags):
    """`tinytf course build --from-runs`: one page per lesson that holds every figure of its run."""
    if not EXECUTED:  # run alone (-k course): execute the shortest lesson
        run_as_notebook(min(LESSON_IDS, key=lambda i: LESSONS[i].quick_seconds), runs_root)
    ids = list(EXECUTED)
    index = build_course(tmp_path / "site", lessons=ids, from_runs=runs_root)
    text = index.read_text()
    for lesson_id in ids:
        page = index.parent / (LESSONS[lesson_id].file.removesuffix(".py") + ".html")
        assert f'href="{page.name}"' in text and LESSONS[lesson_id].title in text
        record = json.loads((index.parent / "runs" / lesson_id / "metrics.json").read_text())
        html = page.read_text()
        for name in record["figures"]:
            png = base64.b64encode((index.parent / "runs" / lesson_id / name).read_bytes()).decode()
            assert png in html, f"{page.name} does not hold {name}"
        assert "<table" in html and record["claims"][0]["text"].split()[0] in html
        # nothing on the page is fetched from the network except MathJax (for the equations)
        assert "require.js" not in html and "mermaid" not in html.split("</head>")[0]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_lesson_claims_hold_at_other_seeds(lesson_id, seed, tmp_path, user_xla_flags):
    command = [sys.executable, "-m", "tinytf", "lesson", lesson_id, "--quick", "--seed", str(seed),
               "--out", str(tmp_path), "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    run_dir = latest_run(lesson_id, tmp_path)
    assert run_dir is not None and (run_dir / "metrics.json").exists(), done.stdout + done.stderr
    check_record(json.loads((run_dir / "metrics.json").read_text()), run_dir)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_lesson_numbers_do_not_depend_on_how_many_runs_share_the_machine(lesson_id, tmp_path, user_xla_flags):
    """Lessons train independent runs side by side (`tinytf.train.parallel_map`): one at a time
    ($TINYTF_WORKERS=1) and two at a time give bit-identical metrics."""
    records = []
    for workers in ("1", "2"):
        out = tmp_path / f"workers{workers}"
        command = [sys.executable, "-m", "tinytf", "lesson", lesson_id, "--quick", "--seed", "0",
                   "--out", str(out), "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TINYTF_WORKERS": workers})
        assert done.returncode == 0, done.stdout + done.stderr
        records.append(json.loads((latest_run(lesson_id, out) / "metrics.json").read_text()))
    assert records[0]["metrics"] == records[1]["metrics"]
    assert [c["value"] for c in records[0]["claims"]] == [c["value"] for c in records[1]["claims"]]
