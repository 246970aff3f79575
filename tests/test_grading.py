"""The grader checks itself: references score full marks, stubs zero, every classic
mistake (mutant) loses points with a message naming it, and hostile submissions
earn nothing and cannot hang or crash the grader.

Student code only ever runs in child processes (tinytf.grading.sandbox). To keep
this file fast, the 86 mutant programs (our own code) are also judged in-process
through the same grading path with the child replaced; one mutant per exercise
still goes through real child processes.
"""

from __future__ import annotations

import ast
import csv
import inspect
import json
import time
from pathlib import Path

import numpy as np
import pytest

from tinytf.grading import EXERCISES, format_report, grade, grade_submissions, init_workspace, register_cli, stubs_dir
from tinytf.grading.core import Mutant, compare_arrays
from tinytf.grading.report import summary_line
from tinytf.grading.runner import _draw_inputs, grade_exercise
from tinytf.grading.sandbox import Call, CallResult, RunResult, policy, run_student

BY_ID = {ex.id: ex for ex in EXERCISES}
SOFTMAX = BY_ID["01_softmax"]


def _workspace(tmp_path: Path, files: dict[str, str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _reference_files() -> dict[str, str]:
    return {ex.filename: ex.reference_source() for ex in EXERCISES}


def _run_in_process(files, module_file, calls, **_):
    """Stand-in for the child process, for trusted code (the mutants) only."""
    namespace = {"__name__": "trusted_mutant"}
    exec(compile(files[module_file].decode(), module_file, "exec"), namespace)  # noqa: S102
    result = RunResult(sandbox="in-process (tests, trusted code)")
    for call in calls:
        kwargs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in call.kwargs.items()}
        try:
            with np.errstate(all="ignore"):
                out = namespace[call.function](**kwargs)
        except Exception as exc:  # noqa: BLE001
            result.calls[call.id] = CallResult(error=type(exc).__name__, message=str(exc))
            continue
        parts = list(out) if isinstance(out, (tuple, list)) else [out]
        result.calls[call.id] = CallResult(
            outputs=tuple(np.asarray(p) for p in parts), is_tuple=isinstance(out, (tuple, list))
        )
    return result


# ----------------------------------------------------------------------------- catalogue
def test_catalogue_is_in_course_order_with_enough_exercises():
    assert len(EXERCISES) >= 10
    assert [ex.number for ex in EXERCISES] == list(range(1, len(EXERCISES) + 1))
    lessons = {
        "attention-basics",
        "positions",
        "heads",
        "rank-collapse",
        "entropy-collapse",
        "attention-sinks",
        "dilution",
        "detr-queries",
        "vit-attention",
        "spurious-attention",
    }
    assert {ex.lesson for ex in EXERCISES} == lessons
    for ex in EXERCISES:
        assert any(c.hidden for c in ex.checks) and any(not c.hidden for c in ex.checks), ex.id
        assert len(ex.mutants) >= 4, ex.id
        assert len({m.id for m in ex.mutants}) == len(ex.mutants), ex.id


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_stub_matches_reference_signatures(ex):
    stub = (stubs_dir() / ex.filename).read_text()
    tree = ast.parse(stub)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(defs) == set(ex.functions)
    assert ast.get_docstring(tree) and f"Lesson: {ex.lesson}" in ast.get_docstring(tree)
    for name, node in defs.items():
        ref_params = list(inspect.signature(getattr(ex.reference, name)).parameters)
        assert [a.arg for a in node.args.args] == ref_params, name
        assert ast.get_docstring(node), f"{name} needs a docstring (the spec)"
        raise_node = node.body[-1]
        assert isinstance(raise_node, ast.Raise) and f"Exercise {ex.number}:" in ast.unparse(raise_node)


def test_mutant_patch_must_match_exactly_once():
    with pytest.raises(ValueError, match="occurs 0 times"):
        Mutant(id="x", mistake="m", patch=(("not in the source", ""),)).program("def f(): pass\n")
    with pytest.raises(ValueError, match="occurs 2 times"):
        Mutant(id="x", mistake="m", patch=(("a", "b"),)).program("a a")


def test_hidden_inputs_are_secret_and_visible_inputs_reproducible():
    ex = BY_ID["02_attention"]
    a, b, c = _draw_inputs(ex, 1), _draw_inputs(ex, 2), _draw_inputs(ex, 1)
    for check, x, y, z in zip(ex.checks, a, b, c):
        same = all(np.array_equal(x[k], y[k]) for k in x) if x.keys() == y.keys() else False
        assert same != check.hidden, check.name
        assert all(np.array_equal(x[k], z[k]) for k in x)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_references_pass_for_other_hidden_seeds(seed):
    for ex in EXERCISES:
        files = {ex.filename: ex.reference_source().encode()}
        res = grade_exercise(ex, files, secret=seed, timeout=10, run=_run_in_process)
        assert res.points == res.max_points, (ex.id, res.messages())


@pytest.mark.slow
def test_references_pass_for_many_hidden_seeds():
    for seed in range(100, 130):
        for ex in EXERCISES:
            res = grade_exercise(
                ex, {ex.filename: ex.reference_source().encode()}, secret=seed, timeout=10, run=_run_in_process
            )
            assert res.points == res.max_points, (seed, ex.id, res.messages())


def test_compare_arrays_messages_name_shapes_and_values():
    e = np.zeros((2, 3, 5))
    assert "expected shape (2, 3, 5), got (2, 5, 3)" in compare_arrays("w", e, np.zeros((2, 5, 3)), 1e-4, 1e-5)
    assert "an axis is transposed" in compare_arrays("w", e, np.zeros((2, 5, 3)), 1e-4, 1e-5)
    msg = compare_arrays("w", e, np.where(np.arange(30).reshape(2, 3, 5) == 7, 0.5, 0.0), 1e-4, 1e-5)
    assert "1 of 30 entries differ" in msg and "[0, 1, 2]" in msg and "expected 0, got 0.5" in msg
    assert "NaN" in compare_arrays("w", e, np.full(e.shape, np.nan), 1e-4, 1e-5)
    assert "boolean" in compare_arrays("m", np.ones(3, bool), np.ones(3, int), 1e-4, 1e-5)
    assert compare_arrays("w", e, e + 1e-7, 1e-4, 1e-5) is None


# ----------------------------------------------------------------------------- full pipeline
def test_references_score_full_marks(tmp_path):
    report = grade(_workspace(tmp_path, _reference_files()), timeout=60, jobs=2)
    assert report.total == report.max_points == sum(ex.max_points for ex in EXERCISES)
    assert report.all_passed
    n = report.counts()
    assert summary_line(report).startswith(
        f"All {n['visible'] + n['hidden']} checks passed ({n['visible']} visible, {n['hidden']} hidden)"
    )


def test_untouched_stubs_score_zero_with_clear_messages(tmp_path):
    written, skipped = init_workspace(tmp_path)
    assert len(written) == len(EXERCISES) and not skipped
    start = time.monotonic()
    report = grade(tmp_path, timeout=60, jobs=2)
    assert time.monotonic() - start < 45
    assert report.total == 0 and not report.all_passed
    text = format_report(report)
    assert "All" not in summary_line(report)
    for ex in EXERCISES:
        for fn in ex.functions:
            assert f"{fn}: not implemented yet (it raises NotImplementedError: Exercise {ex.number}:" in text
    data = report.to_json()
    assert data["total"] == 0 and data["max"] == report.max_points
    assert {e["id"] for e in data["exercises"]} == set(BY_ID)
    assert all(e["points"] == 0 and e["passed"] == 0 and e["messages"] for e in data["exercises"])


def test_init_never_overwrites_and_says_what_it_skipped(tmp_path, capsys):
    mine = tmp_path / SOFTMAX.filename
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("# my work\n")
    parser = _parser()
    args = parser.parse_args(["exercises", "init", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"skipped {mine} (exists; not overwritten)" in out
    assert mine.read_text() == "# my work\n"
    assert (tmp_path / "02_attention.py").read_text() == (stubs_dir() / "02_attention.py").read_text()
    assert not list(tmp_path.glob("ex*.py"))  # no reference solution leaks into the workspace


def test_mutants_through_child_processes(tmp_path):
    """The first mutant of every exercise, graded end to end."""
    files = {ex.filename: ex.mutants[0].program(ex.reference_source()) for ex in EXERCISES}
    report = grade(_workspace(tmp_path, files), timeout=60, jobs=2)
    for res in report.results:
        mutant = res.exercise.mutants[0]
        assert res.points < res.max_points, (res.exercise.id, mutant.id)
        assert any(mutant.mistake in m for m in res.messages()), (res.exercise.id, mutant.id, res.messages())


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_every_mutant_loses_points_and_is_named(ex):
    for mutant in ex.mutants:
        files = {ex.filename: mutant.program(ex.reference_source()).encode()}
        res = grade_exercise(ex, files, secret=11, timeout=10, run=_run_in_process)
        visible_failed = [c for c in res.checks if not c.hidden and not c.passed]
        assert res.points < res.max_points and visible_failed, mutant.id
        named = [c for c in visible_failed if mutant.mistake in c.hints]
        assert named, f"{ex.id}/{mutant.id}: no failing visible check names the mistake: {res.messages()}"
        assert "\n    inputs: " in named[0].message, named[0].message


def test_feedback_for_visible_failure_has_shapes_values_and_hint(tmp_path):
    ex = BY_ID["02_attention"]
    src = ex.reference_source().replace(" / np.sqrt(H)", "")
    report = grade(_workspace(tmp_path, {ex.filename: src}), only=["02"], timeout=60)
    msgs = report.results[0].messages()
    first = next(m for m in msgs if m.startswith("no mask"))
    assert "entries differ (shape (2, 5, 3, 11))" in first and "expected" in first and "got" in first
    assert "inputs: query=(2, 5, 3, 11) float32, key=(2, 7, 3, 11) float32" in first
    assert "likely mistake: the logits were not scaled" in first
    hidden = [c for c in ex.checks if c.hidden]
    assert (
        msgs[-1]
        == f"hidden checks: {len(hidden)} of {len(hidden)} failed (their inputs and expected values are not shown)"
    )
    assert not any(c.name in m for c in hidden for m in msgs)


def test_partial_credit_only_for_what_was_computed(tmp_path):
    src = SOFTMAX.reference_source() + (
        "\n_ok = softmax\n"
        "def softmax(x, mask=None, axis=-1):\n"
        "    import os\n"
        "    if axis != -1:\n"
        "        os._exit(0)\n"
        "    return _ok(x, mask, axis)\n"
    )
    report = grade(_workspace(tmp_path, {SOFTMAX.filename: src}), only=["softmax"], timeout=60)
    res = report.results[0]
    passed = {c.name for c in res.checks if c.passed}
    # calls run in order: the checks before the first axis != -1 call returned, the rest never did
    order = [c.name for c in SOFTMAX.checks]
    first_exit = order.index("axis=1")
    assert passed == set(order[:first_exit])
    assert any("did not finish normally" in n for n in res.notes)
    assert "Only 1 of" in summary_line(report)


def test_numpy_and_jax_solutions_are_both_accepted(tmp_path):
    jax_rank = """
import jax.numpy as jnp

def relative_residual(x):
    x = jnp.asarray(x)
    residual = x - x.mean(axis=1, keepdims=True)
    return jnp.sqrt((residual**2).sum(axis=(1, 2)) / (x**2).sum(axis=(1, 2)))
"""
    jax_masks = """
import jax.numpy as jnp

def causal_mask(T, S=None):
    S = T if S is None else S
    return (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + (S - T))[None, None]

def padding_mask(lengths, S):
    return (jnp.arange(S)[None, :] < jnp.asarray(lengths)[:, None])[:, None, None, :]
"""
    numpy_rope = BY_ID["05_rope"].reference_source()
    ws = _workspace(tmp_path, {"07_rank.py": jax_rank, "03_masks.py": jax_masks, "05_rope.py": numpy_rope})
    report = grade(ws, only=["03", "05", "07"], timeout=60)
    assert [r.points for r in report.results] == [r.max_points for r in report.results], format_report(report)


# ----------------------------------------------------------------------------- attacks
ATTACKS = {
    "sys_exit_at_import": "import sys\nsys.exit(0)\n",
    "os_exit_in_function": "import os\ndef softmax(x, mask=None, axis=-1):\n    os._exit(0)\n",
    "infinite_loop_at_import": "while True:\n    pass\n",
    "infinite_loop_in_function": "def softmax(x, mask=None, axis=-1):\n    while True:\n        pass\n",
    "prints_50_mb": "import sys\nsys.stdout.write('x' * 50_000_000)\n"
    "def softmax(x, mask=None, axis=-1):\n    return x\n",
    "raises": "raise RuntimeError('boom')\n",
    "patches_numpy_and_builtins": (
        "import builtins, numpy as np, numpy.testing\n"
        "np.allclose = lambda *a, **k: True\nnp.isclose = lambda a, b, **k: np.ones(np.shape(a), bool)\n"
        "np.testing.assert_allclose = lambda *a, **k: None\nnp.array_equal = lambda *a, **k: True\n"
        "builtins.len = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
        "def softmax(x, mask=None, axis=-1):\n    return np.zeros_like(x)\n"
    ),
    "patches_pytest": "import pytest\npytest.approx = lambda *a, **k: None\n"
    "def softmax(x, mask=None, axis=-1):\n    return x\n",
    "fake_results_and_report": (
        "import os, sys, json, struct\n"
        "for name in ('results.json', 'results.npz', 'grade.json'):\n"
        "    open(name, 'w').write(json.dumps({'total': 116, 'max': 116, 'all_passed': True}))\n"
        "print('All 87 checks passed (58 visible, 29 hidden): 116/116 points.')\n"
        "def softmax(x, mask=None, axis=-1):\n"
        "    head = json.dumps({'call': 0, 'ok': True, 'tuple': False, 'n': 1}).encode()\n"
        "    for fd in range(3, 20):\n"
        "        try:\n"
        "            os.write(fd, b'F' + struct.pack('>I', len(head)) + head + struct.pack('>Q', 0))\n"
        "        except OSError:\n"
        "            pass\n"
        "    os.write(1, b'garbage frames')\n"
        "    return x * 0 + 1\n"
    ),
    "returns_strings_and_objects": "import numpy as np\ndef softmax(x, mask=None, axis=-1):\n"
    "    return np.array(['a'] * x.size, dtype=object)\n",
    "huge_result": "import numpy as np\ndef softmax(x, mask=None, axis=-1):\n    return np.ones(6_000_000)\n",
    "forged_report_in_exception": "def softmax(x, mask=None, axis=-1):\n"
    "    raise ValueError('x\\n\\nAll 87 checks passed (58 visible, 29 hidden): 116/116 points.')\n",
    "allocates_8_gb": "import numpy as np\n"
    "def softmax(x, mask=None, axis=-1):\n    return np.ones(1 << 30) + x.sum()\n",
    "daemon_holding_pipes": (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(2)\n    os._exit(0)\n"
        "def softmax(x, mask=None, axis=-1):\n    while True:\n        pass\n"
    ),
}


def test_attacks_score_zero_and_the_grader_finishes(tmp_path):
    root = tmp_path / "submissions"
    for name, src in ATTACKS.items():
        _workspace(root / name, {SOFTMAX.filename: src})
    timeout = 3.0
    start = time.monotonic()
    reports = grade_submissions(root, csv_path=tmp_path / "out.csv", only=["01"], timeout=timeout, jobs=2)
    elapsed = time.monotonic() - start
    assert set(reports) == set(ATTACKS)
    for name, rep in reports.items():
        assert rep.total == 0, (name, rep.to_json())
        assert not rep.all_passed
        assert "All" not in summary_line(rep)
    # every run is bounded by its time limit (+ start-up and judging slack on a loaded machine)
    assert elapsed < len(ATTACKS) * (timeout + 3), elapsed
    notes = {name: " ".join(rep.results[0].notes) for name, rep in reports.items()}
    assert "time limit" in notes["infinite_loop_at_import"]
    assert "printed more than" in notes["prints_50_mb"]
    assert "SystemExit" in notes["sys_exit_at_import"]
    assert "pytest" in notes["patches_pytest"]
    assert "MemoryError" in format_report(reports["allocates_8_gb"])
    forged = format_report(reports["forged_report_in_exception"])
    assert "All 87 checks passed" in forged and not any(line.startswith("All") for line in forged.splitlines())
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert {r["submission"] for r in rows} == set(ATTACKS)
    assert all(r["total"] == "0" and r["01_softmax"] == "0" for r in rows)


@pytest.fixture
def landlock_abi():
    """The Landlock ABI the child runs under; skips where there is no Landlock."""
    probe = run_student({"p.py": b"def f(x):\n    return x\n"}, "p.py", [Call(0, "f", {"x": np.ones(1)})])
    if not probe.sandbox.startswith("landlock ABI "):
        pytest.skip(f"the Landlock sandbox is unavailable here ({probe.sandbox})")
    return int(probe.sandbox.split()[-1])


def test_sandbox_blocks_reference_solutions_and_the_grader(tmp_path, landlock_abi):
    ref_file = Path(SOFTMAX.reference.__file__)
    attacks = {
        "import_reference": "import sys\n"
        "sys.meta_path = [m for m in sys.meta_path if 'Policy' not in type(m).__name__]\n"
        f"sys.path.append({str(ref_file.parents[3])!r})\n"
        "from tinytf.grading.reference.ex01_softmax import softmax\n",
        "exec_reference": f"exec(open({str(ref_file)!r}).read())\n",
        "read_other_files": "import glob\n"
        "src = [open(p).read() for p in glob.glob('/tmp/**/*softmax*.py', recursive=True)]\n"
        "exec(src[0])\n",
        "write_into_the_package": f"open({str(ref_file.with_name('_planted.py'))!r}, 'w').write('x = 1')\n",
    }
    if landlock_abi >= 6:  # signals are scoped to the sandbox from ABI 6 on
        attacks["kill_the_grader"] = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
    root = tmp_path / "subs"
    for name, src in attacks.items():
        _workspace(root / name, {SOFTMAX.filename: src})
    _workspace(root / "zz_reference_copy_elsewhere", {"notes.py": SOFTMAX.reference_source()})
    planted = ref_file.with_name("_planted.py")
    try:
        reports = grade_submissions(root, only=["01"], timeout=10)
        assert not planted.exists()
    finally:
        planted.unlink(missing_ok=True)
    for name in attacks:
        assert reports[name].total == 0, (name, reports[name].results[0].notes)


def test_links_and_special_files_are_not_read(tmp_path):
    """The grading process reads the workspace, so a link to a reference must not pass as a submission."""
    import os

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / SOFTMAX.filename).symlink_to(Path(SOFTMAX.reference.__file__))
    attention = BY_ID["02_attention"]
    (tmp_path / "elsewhere.py").write_text(attention.reference_source())
    os.link(tmp_path / "elsewhere.py", ws / attention.filename)
    os.mkfifo(ws / "03_masks.py")
    report = grade(ws, only=["01", "02", "03"], timeout=10)
    assert report.total == 0
    notes = [r.notes[0] for r in report.results]
    assert "symbolic link" in notes[0] and "hard link" in notes[1] and "not a regular file" in notes[2]


def _frame(header: dict, body: bytes = b"") -> bytes:
    import struct

    head = json.dumps(header).encode()
    return b"F" + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(body)) + body


def test_result_frames_are_validated_before_any_allocation():
    import io
    import zipfile

    from tinytf.grading.sandbox import _parse_frames

    def npz(array_bytes: bytes, compress=zipfile.ZIP_STORED) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=compress) as zf:
            zf.writestr("arr_0.npy", array_bytes)
        return buf.getvalue()

    def npy(shape, dtype="<f8", data=b"") -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    good = io.BytesIO()
    np.savez(good, np.arange(3.0))
    frames = [
        _frame({"sandbox": "test"}),
        _frame({"call": 0, "ok": True, "n": 1}, good.getvalue()),
        _frame({"call": 1, "ok": True, "n": 1}, npz(npy((10**12,)))),  # promises 8 TB
        _frame({"call": 2, "ok": True, "n": 1}, npz(npy((3,), "|O"))),  # objects: pickles
        _frame({"call": 3, "ok": True, "n": 1}, npz(npy((10**5,), data=bytes(8 * 10**5)), zipfile.ZIP_DEFLATED)),
        _frame({"call": 4, "ok": True, "n": 1}, b"not a zip"),
        _frame({"call": 0, "ok": True, "n": 1}, good.getvalue()),  # a second answer to call 0 is ignored
        _frame({"call": 5, "ok": False, "error": "X", "message": "line 1\nAll checks passed\x1b[2J"}),
    ]
    result = RunResult()
    _parse_frames(b"".join(frames) + b"F" + b"[" * 60000, result)
    assert result.sandbox == "test" and result.status == "bad-frames"
    assert np.array_equal(result.calls[0].outputs[0], np.arange(3.0))
    assert all(result.calls[i].error == "BadResult" for i in (1, 2, 3, 4))
    assert "\n" not in result.calls[5].message and "\x1b" not in result.calls[5].message
    deep = RunResult()
    _parse_frames(_frame({"sandbox": "x"}) + b"F" + (60000).to_bytes(4, "big") + b"[" * 60000 + bytes(8), deep)
    assert deep.status == "bad-frames"  # deeply nested JSON: rejected, no RecursionError


def test_policy_blocks_tinytf_and_scipy_solvers():
    pol = policy()
    assert "tinytf" in pol.blocked_imports and "scipy.optimize" in pol.blocked_imports
    assert not any("tinytf" in path for path, kind in pol.rules if kind != "list")


# ----------------------------------------------------------------------------- command line
def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="tinytf")
    register_cli(parser.add_subparsers(dest="command"))
    return parser


def test_cli_list_and_grade_json(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(["exercises", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert all(ex.id in out for ex in EXERCISES)
    ws = _workspace(tmp_path, {SOFTMAX.filename: SOFTMAX.reference_source()})
    args = parser.parse_args(["grade", str(ws), "--only", "01", "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == data["max"] == SOFTMAX.max_points
    assert data["exercises"][0].keys() >= {"id", "points", "max", "passed", "failed", "messages"}
    assert data["complete"] is False and data["all_passed"] is False  # only 1 of 15 exercises ran
    args = parser.parse_args(["grade", str(tmp_path / "missing")])
    assert args.func(args) == 2
    assert "is not a folder" in capsys.readouterr().err
    args = parser.parse_args(["grade", str(ws), "--only", "nope"])
    assert args.func(args) == 2
    assert "no such exercise" in capsys.readouterr().err


# ----------------------------------------------------------------------------- references vs oracles
def test_references_agree_with_independent_implementations():
    """The references follow tinytf's own conventions and match outside oracles."""
    import jax
    import scipy.optimize
    import scipy.special

    from tinytf import attention, positional

    rng = np.random.default_rng(0)
    ref = {ex.slug: ex.reference for ex in EXERCISES}
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    mask = rng.random((2, 3, 5, 7)) < 0.6
    mask[0, 0, 0] = False
    np.testing.assert_allclose(ref["softmax"].softmax(x), scipy.special.softmax(x, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(ref["softmax"].softmax(x, mask), attention.softmax(x, mask), atol=1e-6)
    np.testing.assert_allclose(ref["softmax1"].softmax1(x, mask), attention.softmax1(x, mask), atol=1e-6)
    np.testing.assert_allclose(ref["ssmax"].scalable_softmax(x, 1.0, mask), attention.ssmax(x, mask), atol=1e-5)

    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in [(2, 5, 3, 11), (2, 7, 3, 11), (2, 7, 3, 11)])
    causal = np.asarray(attention.causal_mask(5, 7))
    np.testing.assert_array_equal(ref["masks"].causal_mask(5, 7), causal)
    np.testing.assert_array_equal(ref["masks"].padding_mask([3, 7], 7), attention.padding_mask(np.array([3, 7]), 7))
    out, _ = ref["attention"].scaled_dot_product_attention(q, k, v, causal)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, mask=causal), atol=1e-5)

    np.testing.assert_allclose(ref["sinusoidal"].sinusoidal_encoding(7, 12), positional.sinusoidal(7, 12), atol=1e-5)
    pos = rng.integers(0, 40, (2, 5))
    np.testing.assert_allclose(
        ref["rope"].apply_rope(q[..., :8], pos), positional.apply_rope(q[..., :8], pos), atol=1e-4
    )

    cost = rng.uniform(size=(7, 5))
    rows, cols = ref["matching"].hungarian_match(cost)
    best = cost[scipy.optimize.linear_sum_assignment(cost)].sum()
    assert abs(cost[rows, cols].sum() - best) < 1e-12

    images = rng.standard_normal((2, 6, 9, 2))
    patches = ref["patches"].patchify(images, 3)
    for r, c, py, px, ch in [(0, 0, 0, 0, 0), (1, 2, 2, 1, 1), (0, 1, 1, 2, 0)]:  # the definition, entry by entry
        assert patches[1, r * 3 + c, (py * 3 + px) * 2 + ch] == images[1, r * 3 + py, c * 3 + px, ch]


@pytest.mark.slow
def test_reference_metrics_agree_with_tinytf_diagnostics():
    """Entropy, sink rate, rollout and GIoU: the same numbers as the lessons' own tools."""
    import scipy.special

    diagnostics = pytest.importorskip("tinytf.diagnostics")
    detection = pytest.importorskip("tinytf.detection")
    rng = np.random.default_rng(1)
    ref = {ex.slug: ex.reference for ex in EXERCISES}
    x = rng.standard_normal((2, 3, 5, 7))
    mask = rng.random((2, 3, 5, 7)) < 0.6
    mask[..., 0] = True
    w = scipy.special.softmax(np.where(mask, x, -np.inf), axis=-1)
    qmask = rng.random((2, 5)) < 0.7
    qmask[:, 0] = True
    np.testing.assert_allclose(
        ref["entropy"].attention_entropy(w, qmask), diagnostics.attention_entropy(w, query_mask=qmask), atol=1e-5
    )
    maps = scipy.special.softmax(rng.standard_normal((3, 2, 3, 7, 7)) * 2, axis=-1)
    np.testing.assert_allclose(
        ref["rollout"].attention_rollout(maps, 0.3), diagnostics.attention_rollout(maps, residual=0.3), atol=1e-5
    )
    causal_maps = scipy.special.softmax(np.where(np.tril(np.ones((7, 7), bool)), maps * 5, -np.inf), axis=-1)
    for kk in (0, 2):
        assert ref["sinks"].sink_rate(causal_maps, 0.3, kk) == pytest.approx(
            float(diagnostics.sink_rate(list(causal_maps), eps=0.3, k=kk))
        )
    centred = rng.uniform(0.2, 0.6, (5, 4)).astype(np.float32)
    boxes = ref["giou"].box_cxcywh_to_xyxy(centred)
    np.testing.assert_allclose(boxes, detection.box_cxcywh_to_xyxy(centred), atol=1e-6)
    np.testing.assert_allclose(
        ref["giou"].generalized_box_iou(boxes[:3], boxes), detection.generalized_box_iou(boxes[:3], boxes), atol=1e-5
    )
