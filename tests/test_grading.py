"""The grader checks itself: references score full marks, stubs zero, every classic
mistake (mutant) loses points with a message naming it, hidden inputs follow the
assignment secret, and what students install holds no answer.

Student code only ever runs in child processes (tinytf.grading.sandbox). To keep
this file fast, the mutant programs (our own code) are also judged in-process
through the same grading path with the child replaced; the first mutant of every
exercise still goes through real child processes. Attacks: test_grading_attacks.py.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import hmac
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from tinytf.grading import exercises, format_report, grade, init_workspace, prepare, register_cli
from tinytf.grading.bundle import DATA_DIR, build_bundle, public_entry, read_bundle, shipped_bundle
from tinytf.grading.core import Mutant, compare_arrays
from tinytf.grading.instructor import (CHECKOUT_INSTRUCTOR_DIR, InstructorError, draw_inputs, hidden_seed,
                                       load_instructor, read_secret)
from tinytf.grading.report import summary_line
from tinytf.grading.runner import grade_exercise
from tinytf.grading.sandbox import PACKAGE_DIR, CallResult, RunResult
from tinytf.grading import similarity
from tinytf.grading.similarity import copied_functions

SECRET = "tests-secret-0123456789abcdef"
INSTRUCTOR = load_instructor(CHECKOUT_INSTRUCTOR_DIR)
EXERCISES = INSTRUCTOR.exercises
BY_ID = {ex.id: ex for ex in EXERCISES}
SOFTMAX = BY_ID["01_softmax"]
STUBS = PACKAGE_DIR.parent / "exercises"


def _workspace(tmp_path: Path, files: dict[str, str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _reference_files() -> dict[str, str]:
    return {ex.filename: INSTRUCTOR.sources[ex.id] for ex in EXERCISES}


def _run_in_process(files, module_file, calls, **_):
    """Stand-in for the child process, for trusted code (the mutants) only."""
    namespace = {"__name__": "trusted_mutant"}
    exec(compile(files[module_file].decode(), module_file, "exec"), namespace)  # noqa: S102
    result = RunResult(protections={"in-process": "tests, trusted code"})
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


@pytest.fixture(scope="module")
def graded():
    return prepare(secret=SECRET)


@pytest.fixture(scope="module")
def practice(monkeypatch_module):
    return prepare()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.delenv("TINYTF_GRADING_SECRET", raising=False)
    yield mp
    mp.undo()


def _parser():
    parser = argparse.ArgumentParser(prog="tinytf")
    register_cli(parser.add_subparsers(dest="command"))
    return parser


def _cli(argv, capsys):
    args = _parser().parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- catalogue
def test_catalogue_is_in_course_order_with_enough_exercises():
    assert len(EXERCISES) >= 10
    assert [ex.number for ex in EXERCISES] == list(range(1, len(EXERCISES) + 1))
    lessons = {
        "attention-basics", "positions", "heads", "rank-collapse", "entropy-collapse", "attention-sinks",
        "dilution", "detr-queries", "vit-attention", "spurious-attention",
    }
    assert {ex.lesson for ex in EXERCISES} == lessons
    for ex in EXERCISES:
        assert any(c.hidden for c in ex.checks) and any(not c.hidden for c in ex.checks), ex.id
        assert len(ex.mutants) >= 4, ex.id
        assert len({m.id for m in ex.mutants}) == len(ex.mutants), ex.id
        assert len({c.name for c in ex.checks}) == len(ex.checks), ex.id


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_at_least_half_of_every_exercises_points_are_hidden(ex):
    assert ex.hidden_points >= ex.visible_points, (ex.id, ex.visible_points, ex.hidden_points)
    for fn in ex.functions:  # every function is checked on secret inputs too
        assert any(c.hidden and c.function == fn for c in ex.checks), (ex.id, fn)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_stub_matches_reference_signatures(ex):
    stub = (STUBS / ex.filename).read_text()
    tree = ast.parse(stub)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert set(defs) == set(ex.functions)
    assert ast.get_docstring(tree) and f"Lesson: {ex.lesson}" in ast.get_docstring(tree)
    namespace = INSTRUCTOR.oracle().namespace(ex, None)
    for name, node in defs.items():
        ref_params = list(inspect.signature(namespace[name]).parameters)
        assert [a.arg for a in node.args.args] == ref_params, name
        assert ast.get_docstring(node), f"{name} needs a docstring (the spec)"
        raise_node = node.body[-1]
        assert isinstance(raise_node, ast.Raise) and f"Exercise {ex.number}:" in ast.unparse(raise_node)


def test_mutant_patch_must_match_exactly_once():
    with pytest.raises(ValueError, match="occurs 0 times"):
        Mutant(id="x", mistake="m", patch=(("not in the source", ""),)).program("def f(): pass\n")
    with pytest.raises(ValueError, match="occurs 2 times"):
        Mutant(id="x", mistake="m", patch=(("a", "b"),)).program("a a")


# ----------------------------------------------------------------------------- the secret
def test_hidden_inputs_follow_the_secret_and_visible_inputs_do_not():
    ex = BY_ID["02_attention"]
    one, two = b"first-secret-0123456789", b"other-secret-0123456789"
    for i, check in enumerate(ex.checks):
        a, b, c = draw_inputs(ex, i, one), draw_inputs(ex, i, two), draw_inputs(ex, i, one)
        assert all(np.array_equal(a[k], c[k]) for k in a)  # the same secret: the same inputs
        differ = a.keys() != b.keys() or any(not np.array_equal(a[k], b[k]) for k in a)
        assert differ == check.hidden, check.name
        if not check.hidden:  # visible inputs are the ones shipped to students
            shipped = shipped_bundle().visible[(ex.id, i)].inputs
            assert all(np.array_equal(a[k], shipped[k]) for k in a)


def test_hidden_seed_is_hmac_sha256_of_exercise_check_and_name():
    ex, i = BY_ID["13_matching"], 5
    digest = hmac.new(b"s" * 20, f"tinytf-grading/1/13_matching/{i}/{ex.checks[i].name}".encode(),
                      hashlib.sha256).digest()
    expected = np.random.SeedSequence(int.from_bytes(digest, "big")).generate_state(4)
    assert np.array_equal(hidden_seed(b"s" * 20, ex, i).generate_state(4), expected)
    with pytest.raises(InstructorError, match="needs the assignment secret"):
        draw_inputs(ex, i, None)


def test_secret_sources_and_their_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYTF_GRADING_SECRET", raising=False)
    assert read_secret() is None
    monkeypatch.setenv("TINYTF_GRADING_SECRET", "short")
    with pytest.raises(InstructorError, match="holds 5 characters; a secret needs at least 16"):
        read_secret()
    monkeypatch.setenv("TINYTF_GRADING_SECRET", "x" * 16)
    assert read_secret() == b"x" * 16
    (tmp_path / "s").write_text("y" * 20 + "\n")
    assert read_secret(tmp_path / "s") == b"y" * 20  # the file wins over the environment
    with pytest.raises(InstructorError, match="no such file; a new secret .* draws other hidden inputs"):
        read_secret(tmp_path / "nope")
    with pytest.raises(InstructorError, match=r"no such file \(did you mean .*/s\?\)"):  # a typo: the file next to it
        read_secret(tmp_path / "ss")


@pytest.mark.parametrize("secret", ["seed-three-0123456789", "seed-four-0123456789", "seed-five-0123456789"])
def test_references_pass_for_other_secrets(secret):
    setup = prepare(secret=secret, use_sandbox=False)
    for ex in EXERCISES:
        files = {ex.filename: INSTRUCTOR.sources[ex.id].encode()}
        res = grade_exercise(ex, files, setup, timeout=10, run=_run_in_process)
        assert res.points == res.max_points, (ex.id, res.messages())


@pytest.mark.slow
def test_references_pass_for_many_secrets():
    for k in range(40):
        setup = prepare(secret=f"many-secrets-{k:04d}-0123456789", use_sandbox=False)
        for ex in EXERCISES:
            res = grade_exercise(ex, {ex.filename: INSTRUCTOR.sources[ex.id].encode()}, setup, timeout=10,
                                 run=_run_in_process)
            assert res.points == res.max_points, (k, ex.id, res.messages())


def test_compare_arrays_messages_name_shapes_and_values():
    e = np.zeros((2, 3, 5))
    assert "expected shape (2, 3, 5), got (2, 5, 3)" in compare_arrays("w", e, np.zeros((2, 5, 3)), 1e-4, 1e-5)
    assert "an axis is transposed" in compare_arrays("w", e, np.zeros((2, 5, 3)), 1e-4, 1e-5)
    msg = compare_arrays("w", e, np.where(np.arange(30).reshape(2, 3, 5) == 7, 0.5, 0.0), 1e-4, 1e-5)
    assert "1 of 30 entries differ" in msg and "[0, 1, 2]" in msg and "expected 0, got 0.5" in msg
    assert "NaN" in compare_arrays("w", e, np.full(e.shape, np.nan), 1e-4, 1e-5)
    assert "boolean" in compare_arrays("m", np.ones(3, bool), np.ones(3, int), 1e-4, 1e-5)
    assert compare_arrays("w", e, e + 1e-7, 1e-4, 1e-5) is None


# ----------------------------------------------------------------------------- what students install
def test_shipped_bundle_is_up_to_date(tmp_path):
    """`tinytf exercises bundle` would write the same thing (else: run it and commit data/)."""
    from tinytf.grading import _same_bundle

    fresh = read_bundle(build_bundle(INSTRUCTOR, STUBS, tmp_path))
    assert _same_bundle(fresh, read_bundle(DATA_DIR)), "run `tinytf exercises bundle` and commit the result"
    assert [public_entry(e) for e in exercises()] == [public_entry(e) for e in EXERCISES]
    for ex in EXERCISES:
        assert shipped_bundle().stubs[ex.id] == (STUBS / ex.filename).read_text()


def test_the_package_holds_no_reference_solution_and_no_mutant_program():
    """Everything under tinytf/ (what a wheel contains) is free of the instructor side."""
    texts = {p: p.read_text(errors="replace") for p in PACKAGE_DIR.rglob("*") if p.is_file()
             and p.suffix in (".py", ".json", ".txt", ".md", ".toml", ".cfg")}
    assert not list(PACKAGE_DIR.rglob("reference")) and not list(PACKAGE_DIR.rglob("ex01_softmax.py"))
    programs = [new for ex in EXERCISES for m in ex.mutants for _, new in m.patch if len(new) > 25]
    programs += [m.append.strip() for ex in EXERCISES for m in ex.mutants if m.append]
    for path, text in texts.items():
        for program in programs:
            assert program not in text, (path, program[:60])
        if path.suffix == ".py":
            for ex in EXERCISES:
                assert not copied_functions(text, INSTRUCTOR.sources[ex.id]), (path, ex.id)
    manifest = (DATA_DIR / "manifest.json").read_text()
    for ex in EXERCISES:  # not even a line of a reference solution is in the manifest
        for line in INSTRUCTOR.sources[ex.id].splitlines():
            if len(line.strip()) > 30 and not line.strip().startswith(("def ", '"""', "#")):
                assert line.strip() not in manifest, (ex.id, line)


def test_init_writes_the_bundle_stubs_and_never_overwrites(tmp_path, capsys):
    mine = tmp_path / SOFTMAX.filename
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text("# my work\n")
    code, out, _ = _cli(["exercises", "init", str(tmp_path)], capsys)
    assert code == 0
    assert f"skipped {mine} (exists; not overwritten)" in out
    assert mine.read_text() == "# my work\n"
    assert (tmp_path / "02_attention.py").read_text() == (STUBS / "02_attention.py").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ex.filename for ex in EXERCISES)


# ----------------------------------------------------------------------------- full pipeline
def test_references_score_full_marks(tmp_path, graded):
    report = grade(_workspace(tmp_path, _reference_files()), setup=graded, timeout=60, jobs=2)
    assert report.total == report.max_points == sum(ex.max_points for ex in EXERCISES)
    assert report.all_passed
    n = report.counts()
    assert summary_line(report).startswith(
        f"All {n['visible'] + n['hidden']} checks passed ({n['visible']} visible, {n['hidden']} hidden)"
    )
    assert all(r.sealed for r in report.results)
    # a verbatim copy of every reference is flagged (all but the shortest functions, see similarity.py)
    assert all(r.flags for r in report.results)
    assert any("copied: scaled_dot_product_attention is the reference solution's scaled_dot_product_attention" in f
               for f in report.flags)


def test_practice_mode_runs_the_visible_checks_from_the_bundle(tmp_path, practice):
    """A student without the instructor side: visible checks judged from the shipped bundle."""
    assert practice.instructor is None and not practice.graded
    report = grade(_workspace(tmp_path, _reference_files()), setup=practice, timeout=60, jobs=2)
    n = report.counts()
    assert n["visible_passed"] == n["visible"] and n["hidden_ran"] == 0
    assert report.total == sum(ex.visible_points for ex in EXERCISES)
    assert not report.all_passed  # the hidden checks did not run
    line = summary_line(report)
    assert line.startswith(f"All {n['visible']} visible checks passed") and "run by your instructor" in line
    assert not any(r.flags for r in report.results)  # no references on this side to compare with


def test_untouched_stubs_score_zero_with_clear_messages(tmp_path, graded):
    written, skipped = init_workspace(tmp_path)
    assert len(written) == len(EXERCISES) and not skipped
    report = grade(tmp_path, setup=graded, timeout=60, jobs=2)
    assert report.total == 0 and not report.all_passed
    text = format_report(report)
    assert "All" not in summary_line(report)
    for ex in EXERCISES:
        for fn in ex.functions:
            assert f"{fn}: not implemented yet (it raises NotImplementedError: Exercise {ex.number}:" in text
    data = report.to_json()
    assert data["total"] == 0 and data["max"] == report.max_points and data["mode"] == "graded"
    assert {e["id"] for e in data["exercises"]} == set(BY_ID)
    assert all(e["points"] == 0 and e["passed"] == 0 and e["messages"] for e in data["exercises"])


def test_mutants_through_child_processes(tmp_path, graded):
    """The first mutant of every exercise, graded end to end."""
    files = {ex.filename: ex.mutants[0].program(INSTRUCTOR.sources[ex.id]) for ex in EXERCISES}
    report = grade(_workspace(tmp_path, files), setup=graded, timeout=60, jobs=2)
    for res in report.results:
        mutant = res.exercise.mutants[0]
        assert res.points < res.max_points, (res.exercise.id, mutant.id)
        assert any(mutant.mistake in m for m in res.messages()), (res.exercise.id, mutant.id, res.messages())


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.id)
def test_every_mutant_loses_points_and_is_named_on_both_sides(ex):
    """Graded (references) and practice (the shipped bundle) name the same mistake."""
    sides = {"graded": prepare(secret=SECRET, use_sandbox=False), "practice": prepare(use_sandbox=False)}
    for mutant in ex.mutants:
        files = {ex.filename: mutant.program(INSTRUCTOR.sources[ex.id]).encode()}
        hints = {}
        for side, setup in sides.items():
            exercise = setup.bundle.exercise(ex.id) if side == "practice" else ex
            res = grade_exercise(exercise, files, setup, timeout=10, run=_run_in_process)
            visible_failed = [c for c in res.checks if not c.hidden and not c.passed]
            assert res.points < res.max_points and visible_failed, (side, mutant.id)
            named = [c for c in visible_failed if mutant.mistake in c.hints]
            assert named, f"{side} {ex.id}/{mutant.id}: no failing visible check names the mistake: {res.messages()}"
            assert "\n    inputs: " in named[0].message, named[0].message
            hints[side] = [(c.name, c.hints) for c in res.checks if not c.hidden]
        assert hints["graded"] == hints["practice"], mutant.id


def test_feedback_for_visible_failure_has_shapes_values_and_hint(tmp_path, graded):
    ex = BY_ID["02_attention"]
    src = INSTRUCTOR.sources[ex.id].replace(" / np.sqrt(H)", "")
    report = grade(_workspace(tmp_path, {ex.filename: src}), setup=prepare(["02"], secret=SECRET), timeout=60)
    msgs = report.results[0].messages()
    first = next(m for m in msgs if m.startswith("no mask"))
    assert "entries differ (shape (2, 5, 3, 11))" in first and "expected" in first and "got" in first
    assert "inputs: query=(2, 5, 3, 11) float32, key=(2, 7, 3, 11) float32" in first
    assert "likely mistake: the logits were not scaled" in first
    hidden = [c for c in ex.checks if c.hidden]
    assert msgs[-1] == (
        f"hidden checks: {len(hidden)} of {len(hidden)} failed (their inputs and expected values are not shown)"
    )
    assert not any(c.name in m for c in hidden for m in msgs)


def test_partial_credit_only_for_what_was_computed(tmp_path):
    src = INSTRUCTOR.sources[SOFTMAX.id] + (
        "\n_ok = softmax\n"
        "def softmax(x, mask=None, axis=-1):\n"
        "    import os\n"
        "    if axis != -1:\n"
        "        os._exit(0)\n"
        "    return _ok(x, mask, axis)\n"
    )
    report = grade(_workspace(tmp_path, {SOFTMAX.filename: src}), setup=prepare(["softmax"], secret=SECRET),
                   timeout=60)
    res = report.results[0]
    passed = {c.name for c in res.checks if c.passed}
    order = [c.name for c in SOFTMAX.checks]  # calls run in order; the first axis != -1 call ends the process
    assert passed == set(order[: order.index("axis=1")])
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
    numpy_rope = INSTRUCTOR.sources["05_rope"]
    ws = _workspace(tmp_path, {"07_rank.py": jax_rank, "03_masks.py": jax_masks, "05_rope.py": numpy_rope})
    report = grade(ws, setup=prepare(["03", "05", "07"], secret=SECRET), timeout=60)
    assert [r.points for r in report.results] == [r.max_points for r in report.results], format_report(report)


def _raises_everywhere(ex) -> str:
    return "".join(f"def {fn}(*args, **kwargs):\n    raise ValueError('no')\n" for fn in ex.functions)


def test_error_handling_pays_only_with_a_correct_function():
    """A function that only raises ValueError earns nothing, on either side."""
    with_raises = [ex for ex in EXERCISES if any(c.raises for c in ex.checks)]
    assert len(with_raises) >= 3
    for setup in (prepare(secret=SECRET, use_sandbox=False), prepare(use_sandbox=False)):
        for ex in with_raises:
            exercise = ex if setup.graded else setup.bundle.exercise(ex.id)
            res = grade_exercise(exercise, {ex.filename: _raises_everywhere(ex).encode()}, setup, timeout=10,
                                 run=_run_in_process)
            assert res.points == 0, (ex.id, res.messages())
            assert any("raised ValueError as it should, but this point comes only with a correct" in m
                       for m in res.messages()), res.messages()
            right = grade_exercise(exercise, {ex.filename: INSTRUCTOR.sources[ex.id].encode()}, setup, timeout=10,
                                   run=_run_in_process)
            assert all(r.passed for r, c in zip(right.checks, exercise.checks) if c.raises and r.ran)
            assert right.points == sum(c.max_points for c in exercise.checks if c.hidden <= setup.graded)


GREEDY = BY_ID["13_matching"].mutants[1]


def test_the_same_submission_gets_the_same_grade(tmp_path):
    """A slightly wrong submission (greedy matching): the same score in repeated runs and in 9 copies."""
    assert GREEDY.id == "greedy"
    source = GREEDY.program(INSTRUCTOR.sources["13_matching"])
    setup = prepare(["13"], secret=SECRET)
    runs = [grade(_workspace(tmp_path / f"run{k}", {"13_matching.py": source}), setup=setup, timeout=60).total
            for k in range(3)]
    from tinytf.grading.classroom import grade_class

    root = tmp_path / "class"
    for k in range(9):
        _workspace(root / f"student{k}", {"13_matching.py": source})
    _, reports = grade_class(root, setup, out=tmp_path / "grades", timeout=60, jobs=2, progress=False)
    scores = [r.total for r in reports.values()] + runs
    assert len(set(scores)) == 1, scores
    assert 0 < scores[0] < BY_ID["13_matching"].max_points  # greedy fails where it should, passes elsewhere
    # the same in-process: the grade is a function of (submission, secret); other secrets draw other inputs
    per_secret = []
    for k in range(6):
        s = prepare(["13"], secret=f"another-secret-{k}-0123456789", use_sandbox=False)
        per_secret.append(tuple(c.passed for c in grade_exercise(
            s.exercises[0], {"13_matching.py": source.encode()}, s, timeout=10, run=_run_in_process).checks))
    assert len(set(per_secret)) > 1, per_secret  # different secrets, different hidden inputs


# ----------------------------------------------------------------------------- command line
def test_cli_list_and_practice_grade_json(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TINYTF_GRADING_SECRET", raising=False)
    code, out, _ = _cli(["exercises", "list"], capsys)
    assert code == 0 and all(ex.id in out for ex in EXERCISES)
    assert "from hidden checks (your instructor runs them)" in out
    ws = _workspace(tmp_path, {SOFTMAX.filename: INSTRUCTOR.sources[SOFTMAX.id]})
    code, out, _ = _cli(["grade", str(ws), "--only", "01", "--json"], capsys)
    assert code == 0  # every check that ran passed
    data = json.loads(out)
    assert data["mode"] == "practice" and data["total"] == SOFTMAX.visible_points
    assert data["exercises"][0].keys() >= {"id", "points", "max", "passed", "failed", "messages", "checks"}
    assert data["complete"] is False and data["all_passed"] is False
    code, _, err = _cli(["grade", str(tmp_path / "missing")], capsys)
    assert code == 2 and "missing does not exist" in err
    code, _, err = _cli(["grade", str(ws), "--only", "nope"], capsys)
    assert code == 2 and "no such exercise" in err


def test_a_workspace_that_cannot_be_the_one_meant_is_refused_with_what_to_do(tmp_path, capsys, monkeypatch):
    """A new user's mistakes on the student side: exit 2 and one line that says what to run instead."""
    monkeypatch.delenv("TINYTF_GRADING_SECRET", raising=False)
    init_workspace(tmp_path / "work")
    (tmp_path / "empty").mkdir()
    cases = {
        "wrok": f"wrok does not exist (did you mean {tmp_path / 'work'}?)",
        "empty": "holds none of the exercise files (01_softmax.py, 02_attention.py, ...); get the stubs with "
                 f"`tinytf exercises init {tmp_path / 'empty'}`",
        "work/01_softmax.py": f"is a file, not a folder: pass the folder that holds your exercise files (here: "
                              f"tinytf grade {tmp_path / 'work'})",
        ".": f"sub-folders of it do (work): to grade one, tinytf grade {tmp_path / 'work'}; instructors grading "
             f"a class: tinytf grade --all {tmp_path}",
    }
    for arg, message in cases.items():
        code, out, err = _cli(["grade", str(tmp_path / arg), "--quiet"], capsys)
        assert code == 2 and message in err and out == "", (arg, err)
    code, _, err = _cli(["grade", str(tmp_path / "empty"), "--only", "01,03", "--quiet"], capsys)
    assert code == 2 and "holds none of 01_softmax.py or 03_masks.py" in err


def test_cli_grade_text_in_practice_and_graded_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TINYTF_GRADING_SECRET", raising=False)
    init_workspace(tmp_path)
    code, out, _ = _cli(["grade", str(tmp_path), "--only", "01,03", "--quiet"], capsys)
    assert code == 1
    assert "(practice: visible checks only)" in out and "are run by your instructor" in out
    assert "softmax: not implemented yet" in out and "Your code ran in sealed child processes" in out
    secret = tmp_path.parent / "secret.txt"
    code, out, _ = _cli(["exercises", "secret", str(secret)], capsys)
    assert code == 0 and secret.stat().st_mode & 0o777 == 0o600
    code, _, err = _cli(["exercises", "secret", str(secret)], capsys)
    assert code == 2 and "never overwritten" in err
    code, out, _ = _cli(["grade", str(tmp_path), "--only", "01", "--quiet", "--secret-file", str(secret)], capsys)
    assert code == 1 and "practice" not in out and "hidden checks: 4 of 4 failed" in out
    code, _, err = _cli(["grade", str(tmp_path), "--secret-file", str(tmp_path / "nosuch")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = _cli(["grade", str(tmp_path), "--secret-file", str(secret), "--instructor", str(tmp_path)],
                        capsys)
    assert code == 2 and "is not an instructor folder" in err


def test_grading_a_class_writes_a_new_run_folder_with_feedback_and_per_check_csv(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYTF_GRADING_SECRET", SECRET)
    root = tmp_path / "submissions"
    _workspace(root / "perfect", {f: s for f, s in _reference_files().items() if f.startswith(("01", "13"))})
    init_workspace(root / "blank")
    _workspace(root / "greedy", {"01_softmax.py": INSTRUCTOR.sources["01_softmax"],
                                 "13_matching.py": GREEDY.program(INSTRUCTOR.sources["13_matching"])})
    cheat = INSTRUCTOR.sources["01_softmax"].replace("mask", "keep").replace("total", "denominator")
    _workspace(root / "cheater", {"01_softmax.py": cheat, "13_matching.py": "import tinytf\n"})
    out_dir = tmp_path / "grades"
    argv = ["grade", "--all", str(root), "--only", "01,13", "--out", str(out_dir), "--quiet"]
    code, out, err = _cli(argv, capsys)
    assert code == 0, err  # every submission holds both files
    runs = sorted(out_dir.iterdir())
    assert len(runs) == 1 and f"wrote {runs[0]}/" in out
    assert "1 flag(s) in 01_softmax: see feedback/cheater.txt" in out  # the table names them; the files say it all
    assert "2 flag(s) in 01_softmax, 13_matching: see feedback/perfect.txt" in out
    code2, _, _ = _cli(argv, capsys)
    assert code2 == code and len(sorted(out_dir.iterdir())) == 2  # a second run: a second folder
    run = runs[0]
    assert sorted(p.name for p in (run / "feedback").iterdir()) == [
        "blank.txt", "cheater.txt", "greedy.txt", "perfect.txt"]
    rows = {r["submission"]: r for r in csv.DictReader(open(run / "grades.csv"))}
    ex1, ex13 = BY_ID["01_softmax"], BY_ID["13_matching"]
    columns = [c for c in next(csv.reader(open(run / "grades.csv"))) if " | " in c]
    assert len(columns) == len(ex1.checks) + len(ex13.checks)
    assert rows["perfect"]["total"] == str(ex1.max_points + ex13.max_points) == rows["perfect"]["max"]
    assert rows["blank"]["total"] == "0"
    assert 0 < int(rows["greedy"]["13_matching"]) < ex13.max_points
    assert rows["cheater"]["flagged"] == "yes" and "copied: softmax" in rows["cheater"]["flags"]
    assert rows["cheater"]["13_matching"] == "0" and "refused" in rows["cheater"]["notes"]
    per_check = {c: rows["greedy"][c] for c in columns if c.startswith("13_matching")}
    assert sorted(set(per_check.values())) != ["0"] and sum(map(int, per_check.values())) == int(
        rows["greedy"]["13_matching"])
    feedback = (run / "feedback" / "greedy.txt").read_text()
    assert "[pass] 1/1  square cost (3, 3)" in feedback and "[FAIL] 0/1  a cost where the greedy choice is wrong" in \
        feedback and "likely mistake: a greedy choice" in feedback
    assert "[FAIL] 0/2  hidden: (6, 6), greedy fails — failed (hidden check" in feedback
    assert "copied: softmax" in (run / "feedback" / "cheater.txt").read_text()
    assert json.loads((run / "grades.json").read_text())["perfect"]["total"] == int(rows["perfect"]["total"])
    assert "fingerprint" in (run / "run.txt").read_text()


def test_a_submission_lacking_files_fails_the_run_with_its_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYTF_GRADING_SECRET", SECRET)
    root = tmp_path / "subs"
    _workspace(root / "ann", _reference_files())
    _workspace(root / "bob", {"01_softmax.py": INSTRUCTOR.sources["01_softmax"]})
    code, _, err = _cli(["grade", "--all", str(root), "--only", "01,02", "--out", str(tmp_path / "g"), "--quiet"],
                        capsys)
    assert code == 1 and "1 of 2 submission(s) lack exercise files" in err and "bob: 02_attention.py" in err


def test_class_grading_mistakes_get_clear_messages(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYTF_GRADING_SECRET", SECRET)
    (tmp_path / "submissions").mkdir()
    cases = {
        "submision": "does not exist (did you mean",  # a typo
        "submissions": "holds no submissions: expected one sub-folder per student",  # empty
    }
    for name, message in cases.items():
        code, _, err = _cli(["grade", "--all", str(tmp_path / name), "--out", str(tmp_path / "g")], capsys)
        assert code == 2 and message in err, err
    init_workspace(tmp_path / "workspace")
    code, _, err = _cli(["grade", "--all", str(tmp_path / "workspace"), "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "holds exercise files itself" in err and "tinytf grade" in err
    (tmp_path / "other" / "a").mkdir(parents=True)
    (tmp_path / "other" / "a" / "notes.txt").write_text("x")
    code, _, err = _cli(["grade", "--all", str(tmp_path / "other"), "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "none of the 1 sub-folders" in err
    monkeypatch.delenv("TINYTF_GRADING_SECRET")
    _workspace(tmp_path / "class" / "ann", {"01_softmax.py": "x = 1\n"})
    code, _, err = _cli(["grade", "--all", str(tmp_path / "class"), "--out", str(tmp_path / "g")], capsys)
    assert code == 2 and "grading a class needs the assignment secret" in err
    assert not (tmp_path / "g").exists()  # nothing written for a run that did not happen


@pytest.mark.parametrize("argv, message", [
    (["--timeout", "-1"], "argument --timeout: expected a number > 0, got '-1'"),
    (["--timeout", "nan"], "argument --timeout: expected a number > 0, got 'nan'"),
    (["--jobs", "0"], "argument --jobs: expected an int >= 1, got '0'"),
    (["--jobs", "two"], "argument --jobs: expected an int >= 1, got 'two'"),
    (["--out", "FILE/grades"], "argument --out: 'FILE/grades' cannot be a folder"),
])
def test_bad_grade_flags_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    message = message.replace("FILE", str(tmp_path / "FILE"))
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["grade", str(tmp_path), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_exercise_in_only_is_named(tmp_path, capsys):
    code, _, err = _cli(["grade", str(tmp_path), "--only", "99"], capsys)
    assert code == 2 and "--only '99': no such exercise; expected one of 01_softmax" in err


# ----------------------------------------------------------------------------- references vs oracles
def test_references_agree_with_independent_implementations():
    """The references follow tinytf's own conventions and match outside oracles."""
    import jax
    import scipy.optimize
    import scipy.special

    from tinytf import attention, positional

    rng = np.random.default_rng(0)
    ref = {ex.slug: INSTRUCTOR.oracle().namespace(ex, None) for ex in EXERCISES}
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    mask = rng.random((2, 3, 5, 7)) < 0.6
    mask[0, 0, 0] = False
    np.testing.assert_allclose(ref["softmax"]["softmax"](x), scipy.special.softmax(x, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(ref["softmax"]["softmax"](x, mask), attention.softmax(x, mask), atol=1e-6)
    np.testing.assert_allclose(ref["softmax1"]["softmax1"](x, mask), attention.softmax1(x, mask), atol=1e-6)
    np.testing.assert_allclose(ref["ssmax"]["scalable_softmax"](x, 1.0, mask), attention.ssmax(x, mask), atol=1e-5)

    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in [(2, 5, 3, 11), (2, 7, 3, 11), (2, 7, 3, 11)])
    causal = np.asarray(attention.causal_mask(5, 7))
    np.testing.assert_array_equal(ref["masks"]["causal_mask"](5, 7), causal)
    np.testing.assert_array_equal(ref["masks"]["padding_mask"]([3, 7], 7), attention.padding_mask(np.array([3, 7]), 7))
    out, _ = ref["attention"]["scaled_dot_product_attention"](q, k, v, causal)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, mask=causal), atol=1e-5)

    np.testing.assert_allclose(ref["sinusoidal"]["sinusoidal_encoding"](7, 12), positional.sinusoidal(7, 12),
                               atol=1e-5)
    pos = rng.integers(0, 40, (2, 5))
    np.testing.assert_allclose(
        ref["rope"]["apply_rope"](q[..., :8], pos), positional.apply_rope(q[..., :8], pos), atol=1e-4
    )

    cost = rng.uniform(size=(7, 5))
    rows, cols = ref["matching"]["hungarian_match"](cost)
    best = cost[scipy.optimize.linear_sum_assignment(cost)].sum()
    assert abs(cost[rows, cols].sum() - best) < 1e-12

    images = rng.standard_normal((2, 6, 9, 2))
    patches = ref["patches"]["patchify"](images, 3)
    for r, c, py, px, ch in [(0, 0, 0, 0, 0), (1, 2, 2, 1, 1), (0, 1, 1, 2, 0)]:  # the definition, entry by entry
        assert patches[1, r * 3 + c, (py * 3 + px) * 2 + ch] == images[1, r * 3 + py, c * 3 + px, ch]


@pytest.mark.slow
def test_reference_metrics_agree_with_tinytf_diagnostics():
    """Entropy, sink rate, rollout and GIoU: the same numbers as the lessons' own tools."""
    import scipy.special

    diagnostics = pytest.importorskip("tinytf.diagnostics")
    detection = pytest.importorskip("tinytf.detection")
    rng = np.random.default_rng(1)
    ref = {ex.slug: INSTRUCTOR.oracle().namespace(ex, None) for ex in EXERCISES}
    x = rng.standard_normal((2, 3, 5, 7))
    mask = rng.random((2, 3, 5, 7)) < 0.6
    mask[..., 0] = True
    w = scipy.special.softmax(np.where(mask, x, -np.inf), axis=-1)
    qmask = rng.random((2, 5)) < 0.7
    qmask[:, 0] = True
    np.testing.assert_allclose(
        ref["entropy"]["attention_entropy"](w, qmask), diagnostics.attention_entropy(w, query_mask=qmask), atol=1e-5
    )
    maps = scipy.special.softmax(rng.standard_normal((3, 2, 3, 7, 7)) * 2, axis=-1)
    np.testing.assert_allclose(
        ref["rollout"]["attention_rollout"](maps, 0.3), diagnostics.attention_rollout(maps, residual=0.3), atol=1e-5
    )
    causal_maps = scipy.special.softmax(np.where(np.tril(np.ones((7, 7), bool)), maps * 5, -np.inf), axis=-1)
    for kk in (0, 2):
        assert ref["sinks"]["sink_rate"](causal_maps, 0.3, kk) == pytest.approx(
            float(diagnostics.sink_rate(list(causal_maps), eps=0.3, k=kk))
        )
    centred = rng.uniform(0.2, 0.6, (5, 4)).astype(np.float32)
    boxes = ref["giou"]["box_cxcywh_to_xyxy"](centred)
    np.testing.assert_allclose(boxes, detection.box_cxcywh_to_xyxy(centred), atol=1e-6)
    np.testing.assert_allclose(
        ref["giou"]["generalized_box_iou"](boxes[:3], boxes), detection.generalized_box_iou(boxes[:3], boxes),
        atol=1e-5
    )


def test_parsing_survives_python_3_11s_transient_ast_race(monkeypatch):
    """An ast.parse elsewhere in the process can make ours raise SystemError on CPython 3.11
    (python/cpython#106905; it failed a clean CI run): the copy check parses again; a SystemError
    that persists is not swallowed, and source that does not parse is None."""
    real, calls = ast.parse, []

    def racing(source, *args, **kwargs):
        calls.append(source)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=33, after=38)")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(similarity.ast, "parse", racing)
    tree = similarity.parse_python("def f(x):\n    return x\n")
    assert isinstance(tree, ast.Module) and len(calls) == 2
    assert similarity.parse_python("def f(:") is None

    def always(source, *args, **kwargs):
        raise SystemError("AST constructor recursion depth mismatch")

    monkeypatch.setattr(similarity.ast, "parse", always)
    with pytest.raises(SystemError):
        similarity.parse_python("x = 1")
