"""Grade a workspace: run every exercise's checks in child processes and judge them.

`grade(directory)` returns a `GradeReport` (see `report`); `grade_submissions(root)`
grades every sub-folder of `root` (one per student) and can write a CSV.

Order of work in `grade`: import and compile everything the verdicts need
(`preload`), snapshot the student's files, draw the inputs (a fixed seed for visible
checks, a secret one for hidden checks), run one child process per exercise, and
only then, with the child gone, compute the expected values and the verdicts.
"""

from __future__ import annotations

import ast
import os
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tinytf.grading import sandbox
from tinytf.grading.catalogue import EXERCISES
from tinytf.grading.core import Exercise, Verdict, describe_inputs, diagnose, judge_call, program_namespace
from tinytf.grading.report import NOT_RUN, CheckResult, ExerciseResult, GradeReport, write_csv

MAX_STUDENT_FILE_BYTES = 1 << 20
MAX_STUDENT_FILES = 64


# ----------------------------------------------------------------------- selecting exercises
def find_exercises(only=None) -> list[Exercise]:
    """Exercises matching `only` (ids like "01", "1", "softmax", "01_softmax"); all when empty."""
    if not only:
        return list(EXERCISES)
    wanted = [w.strip() for item in only for w in str(item).split(",") if w.strip()]
    chosen = []
    for w in wanted:
        match = [e for e in EXERCISES if w in (e.id, e.slug, e.filename, str(e.number), f"{e.number:02d}")]
        if not match:
            known = ", ".join(e.id for e in EXERCISES)
            raise ValueError(f"--only {w!r}: no such exercise; expected one of {known}")
        chosen += [e for e in match if e not in chosen]
    return sorted(chosen, key=lambda e: e.number)


def read_workspace(directory: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """A snapshot of the student's top-level .py files, read once before anything runs.

    Only plain files are read: a symbolic or hard link (say, to a reference solution,
    which this process can read) or a FIFO is refused, with the reason.

    Returns:
      (files: name -> bytes, refused: name -> reason).
    """
    files, refused = {}, {}
    for path in sorted(directory.glob("*.py"))[:MAX_STUDENT_FILES]:
        name = path.name
        if not (name.isascii() and name.isprintable()):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as err:
            refused[name] = "it is a symbolic link" if path.is_symlink() else f"it cannot be read ({err.strerror})"
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                refused[name] = "it is not a regular file"
            elif st.st_nlink > 1:
                refused[name] = "it is a hard link to another file"
            elif st.st_size > MAX_STUDENT_FILE_BYTES:
                refused[name] = f"it is larger than {MAX_STUDENT_FILE_BYTES >> 20} MiB"
            else:
                files[name] = f.read(MAX_STUDENT_FILE_BYTES + 1)[:MAX_STUDENT_FILE_BYTES]
    return files, refused


def copied_from_reference(ex: Exercise, source: bytes) -> list[str]:
    """Functions of a submission whose code is token for token the reference's.

    A tripwire for instructors (the reference solutions ship with the package), not
    a plagiarism detector: a renamed variable defeats it.
    """

    def bodies(text):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return {}
        out = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                out[node.name] = ast.dump(ast.Module(body=body, type_ignores=[]))
        return out

    mine, ref = bodies(source), bodies(ex.reference_source())
    return [fn for fn in ex.functions if fn in mine and mine[fn] == ref.get(fn)]


def preload(exercises) -> None:
    """Import and compile everything the verdicts need before any student code runs.

    After this, nothing a child process might write to disk (where no sandbox stops
    it) can change the references, the mutants or the judges of this run.
    """
    import scipy.optimize  # noqa: F401 - used by the matching judge

    sandbox.policy()
    for ex in exercises:
        program_namespace(ex, None)
        for m in ex.mutants:
            program_namespace(ex, m.id)


# ----------------------------------------------------------------------- grading
def _draw_inputs(ex: Exercise, secret: int) -> list[dict]:
    inputs = []
    for i, check in enumerate(ex.checks):
        seed = [secret, ex.number, i] if check.hidden else [ex.number, i]
        inputs.append(check.inputs(np.random.default_rng(np.random.SeedSequence(seed))))
    return inputs


def grade_exercise(
    ex: Exercise,
    files: dict[str, bytes],
    *,
    secret: int,
    timeout: float,
    use_sandbox: bool = True,
    require_sandbox: bool = False,
    run=None,
    refused: dict[str, str] | None = None,
) -> ExerciseResult:
    """Run one exercise's checks on the student's file and judge them.

    `run` replaces `sandbox.run_student` (same signature); the grader's own tests use
    it to run trusted mutant programs in-process. Never pass one for student code.
    """
    refused = refused or {}
    inputs = _draw_inputs(ex, secret)
    if ex.filename in refused:
        checks = [CheckResult(c.name, c.function, c.hidden, False, 0, c.max_points, NOT_RUN) for c in ex.checks]
        return ExerciseResult(
            ex, checks, notes=[f"{ex.filename} was not read: {refused[ex.filename]} (submit plain files)"]
        )
    if ex.filename not in files:
        checks = [CheckResult(c.name, c.function, c.hidden, False, 0, c.max_points, NOT_RUN) for c in ex.checks]
        return ExerciseResult(
            ex, checks, notes=[f"{ex.filename} not found (run `tinytf exercises init DIR` to get the stubs)"]
        )
    calls = [sandbox.Call(i, c.function, kw) for i, (c, kw) in enumerate(zip(ex.checks, inputs))]
    run = (run or sandbox.run_student)(
        files, ex.filename, calls, timeout=timeout, sandbox=use_sandbox, require_sandbox=require_sandbox
    )
    notes = []
    copied = copied_from_reference(ex, files[ex.filename])
    if copied:
        notes.append(f"note: {', '.join(copied)} is identical to the reference solution")
    if run.import_error:
        where = f" ({run.import_where})" if run.import_where else ""
        notes.append(f"importing {ex.filename} failed: {run.import_error}{where}")
    if run.status == "timeout":
        notes.append(
            f"time limit: the run took longer than {timeout:g} s and was stopped "
            f"({len(run.calls)} of {len(calls)} checks returned)"
        )
    elif run.status != "ok":
        notes.append(
            f"the run did not finish normally: {run.detail} ({len(run.calls)} of {len(calls)} checks returned)"
        )
    verdicts = []
    for i, (check, kw) in enumerate(zip(ex.checks, inputs)):
        got = run.calls.get(i)
        verdicts.append(judge_call(ex, check, kw, got) if not run.import_error else Verdict(False, NOT_RUN))
    returned = {i: run.calls[i].outputs for i in run.calls if i < len(calls) and run.calls[i].outputs is not None}
    visible = [
        (i, c, kw, returned[i]) for i, (c, kw) in enumerate(zip(ex.checks, inputs)) if not c.hidden and i in returned
    ]
    failing = {i for i, c, _, _ in visible if not verdicts[i].passed}
    hints = diagnose(ex, visible, failing) if failing else {}
    results = []
    for i, (check, kw, verdict) in enumerate(zip(ex.checks, inputs, verdicts)):
        message = verdict.message
        if i in failing:
            message += f"\n    inputs: {describe_inputs(kw)}"
        results.append(
            CheckResult(
                check.name,
                check.function,
                check.hidden,
                verdict.passed,
                check.max_points if verdict.passed else 0,
                check.max_points,
                "" if verdict.passed else message,
                hints.get(i, []),
            )
        )
    return ExerciseResult(ex, results, notes=notes, sandbox=run.sandbox, seconds=run.seconds)


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def grade(directory, **options) -> GradeReport:
    """Grade the exercises in `directory`.

    Args:
      directory: folder holding the student's ``NN_slug.py`` files.
      **options: see `grade_folders`: only, timeout, jobs, seed, use_sandbox, require_sandbox.

    Returns:
      A GradeReport.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a folder: expected the folder with your exercise files "
            "(create one with `tinytf exercises init DIR`)"
        )
    return grade_folders({str(directory): directory}, **options)[str(directory)]


def grade_folders(
    folders: dict[str, Path],
    *,
    only=None,
    timeout: float = 30.0,
    jobs: int | None = None,
    seed: int | None = None,
    use_sandbox: bool = True,
    require_sandbox: bool = False,
) -> dict[str, GradeReport]:
    """Grade several workspaces, sharing one pool of child processes.

    Args:
      folders: name -> folder holding ``NN_slug.py`` files.
      only: exercise ids to grade (default: all).
      timeout: wall-clock seconds per exercise (one child process each).
      jobs: child processes at a time (default: up to 4, at most the CPU count).
      seed: seed for the hidden checks; None (the default) draws a secret one per
        folder. For the grader's own tests.
      use_sandbox: lock children down with Landlock where available.
      require_sandbox: refuse to run student code without Landlock.

    Returns:
      name -> GradeReport, in the order of `folders`.
    """
    exercises = find_exercises(only)
    preload(exercises)
    workspaces = {name: read_workspace(Path(folder)) for name, folder in folders.items()}
    secrets_ = {name: secrets.randbits(63) if seed is None else seed for name in folders}

    def task(name_ex):
        name, ex = name_ex
        files, refused = workspaces[name]
        return grade_exercise(
            ex,
            files,
            secret=secrets_[name],
            timeout=timeout,
            use_sandbox=use_sandbox,
            require_sandbox=require_sandbox,
            refused=refused,
        )

    tasks = [(name, ex) for name in folders for ex in exercises]
    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
        results = list(pool.map(task, tasks))
    reports = {}
    for k, name in enumerate(folders):
        chunk = results[k * len(exercises) : (k + 1) * len(exercises)]
        reports[name] = GradeReport(str(folders[name]), chunk, complete=len(exercises) == len(EXERCISES))
    return reports


def grade_submissions(root, *, csv_path=None, **options) -> dict[str, GradeReport]:
    """Grade every sub-folder of `root` (one per student); optionally write a CSV.

    CSV columns: submission, total, max, visible_passed, visible, hidden_passed,
    hidden, then one column of points per exercise, then notes. Symbolic links and
    hidden folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: expected one sub-folder per submission")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    reports = grade_folders({p.name: p for p in subs}, **options)
    if csv_path is not None:
        write_csv(reports, find_exercises(options.get("only")), csv_path)
    return reports
