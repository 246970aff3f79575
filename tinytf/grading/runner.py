"""Grade a workspace: run every exercise's checks in child processes and judge them.

Two modes (see README, "For students" and "For instructors"):
  - practice (no assignment secret): the visible checks, judged against the
    bundle shipped with tinytf; hidden checks are not run. This is what a student
    has, with or without a source checkout.
  - graded (the instructor's secret and folder): visible and hidden checks, judged
    against the reference solutions; hidden inputs come from the secret, so the same
    submission always gets the same grade.

Order of work in `grade_folders`: `prepare` (read the secret, load and compile the
instructor's references and mutants, check that the sandbox can be sealed), snapshot
the students' files, refuse files that import tinytf or a reference, draw the inputs,
run one child process per exercise, and only then, with the child gone, compute the
expected values and the verdicts.
"""

from __future__ import annotations

import ast
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tinytf.grading import sandbox
from tinytf.grading.bundle import Bundle, BundleOracle, check_matches, shipped_bundle
from tinytf.grading.core import Exercise, Verdict, describe_inputs, diagnose, judge_call
from tinytf.grading.instructor import (Instructor, InstructorError, draw_inputs, find_instructor_dir,
                                       load_instructor, near_miss, read_secret, secret_fingerprint)
from tinytf.grading.report import NOT_RUN, CheckResult, ExerciseResult, GradeReport
from tinytf.grading.similarity import copied_functions, parse_python
from tinytf.progress import progress_bar

MAX_STUDENT_FILE_BYTES = 1 << 20
MAX_STUDENT_FILES = 64
HIDDEN_NOT_RUN = "not run: hidden checks are run by your instructor, with the assignment secret"


# ----------------------------------------------------------------------- selecting exercises
def find_exercises(exercises, only=None) -> list[Exercise]:
    """Exercises matching `only` (ids like "01", "1", "softmax", "01_softmax"); all when empty."""
    if not only:
        return list(exercises)
    wanted = [w.strip() for item in only for w in str(item).split(",") if w.strip()]
    chosen = []
    for w in wanted:
        match = [e for e in exercises if w in (e.id, e.slug, e.filename, str(e.number), f"{e.number:02d}")]
        if not match:
            known = ", ".join(e.id for e in exercises)
            raise ValueError(f"--only {w!r}: no such exercise; expected one of {known}")
        chosen += [e for e in match if e not in chosen]
    return sorted(chosen, key=lambda e: e.number)


# ----------------------------------------------------------------------- one grading run
@dataclass
class Setup:
    """What one grading run knows; made by `prepare`."""

    exercises: list  # the exercises to grade: full (graded) or public (practice)
    bundle: Bundle
    oracle: object  # core.ReferenceOracle (graded) or bundle.BundleOracle (practice)
    secret: bytes | None = None
    instructor: Instructor | None = None
    probe: sandbox.RunResult | None = None  # what the machine's sandbox can do (None: not probed)
    use_sandbox: bool = True
    allow_unsealed: bool = False

    @property
    def graded(self) -> bool:
        return self.secret is not None

    @property
    def forbidden(self) -> tuple[str, ...]:
        return (str(self.instructor.root),) if self.instructor else ()


def prepare(
    only=None,
    *,
    secret: bytes | str | None = None,
    secret_file=None,
    instructor_dir=None,
    need_secret: bool = False,
    allow_unsealed: bool = False,
    use_sandbox: bool = True,
) -> Setup:
    """Read the secret, load the instructor side if grading, select exercises, probe the sandbox.

    Args:
      only: exercise ids to grade (default all).
      secret: the assignment secret itself (API and tests); else `secret_file`, else
        $TINYTF_GRADING_SECRET; none of them: practice mode.
      instructor_dir: the instructor folder (default $TINYTF_INSTRUCTOR_DIR, else the checkout's).
      need_secret: raise InstructorError when there is no secret (grading a class).
      allow_unsealed: run student code even where the sandbox cannot be sealed.
      use_sandbox: False only for the grader's own tests of trusted code.

    Raises:
      InstructorError: a missing or bad secret or instructor folder (message says what to do).
      sandbox.SandboxError: the sandbox cannot be sealed and `allow_unsealed` is False.
    """
    bundle = shipped_bundle()
    if isinstance(secret, str):
        secret = secret.encode()
    if secret is None:
        secret = read_secret(secret_file)
    if secret is None and need_secret:
        raise InstructorError(
            "grading a class needs the assignment secret (it draws the hidden checks' inputs): set "
            "TINYTF_GRADING_SECRET or pass --secret-file PATH (make one with `tinytf exercises secret PATH`)"
        )
    instructor = None
    if secret is not None:
        root = find_instructor_dir(instructor_dir)
        if root is None:
            raise InstructorError(
                "graded mode (an assignment secret is set) needs the instructor folder with the reference "
                "solutions: pass --instructor DIR or set TINYTF_INSTRUCTOR_DIR (in a tinytf checkout it is "
                "exercises/instructor); students grade without a secret"
            )
        instructor = load_instructor(root)
        check_matches(bundle, instructor)
        exercises = find_exercises(instructor.exercises, only)
        oracle = instructor.oracle()
        for ex in exercises:  # compile every program now, before any student code runs
            oracle.preload(ex)
        import scipy.optimize  # noqa: F401 - the matching judge, loaded before student code runs
    else:
        exercises = find_exercises(bundle.exercises, only)
        oracle = BundleOracle(bundle)
    setup = Setup(exercises, bundle, oracle, secret, instructor, None, use_sandbox, allow_unsealed)
    if use_sandbox:
        setup.probe = sandbox.require_sealed(allow_unsealed, setup.forbidden)
    return setup


# ----------------------------------------------------------------------- reading submissions
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


_IMPORTERS = {"__import__", "import_module", "spec_from_file_location", "run_path", "run_module", "SourceFileLoader",
              "ExtensionFileLoader", "load_dynamic", "CDLL", "LoadLibrary", "dlopen"}
_PATH_MARKERS = ("site-packages", "dist-packages", "tinytf/", "instructor/", "reference/", ".so")


def forbidden_code(source: bytes, own_files=()) -> list[str]:
    """What in a submission reaches for tinytf, a reference or another package's code: one line each.

    Static and therefore partial: the sandbox blocks the same things at run time (and
    the child reports attempts); this names them precisely, before anything runs.
    """
    tree = parse_python(source)
    if tree is None:
        return []  # the child reports the syntax error
    own = {Path(f).stem for f in own_files}
    found = []

    def bad_module(name: str) -> bool:
        top = name.split(".")[0]
        return top.startswith("tinytf") or top in sandbox.FORBIDDEN_MODULES + sandbox.LEFT_OUT_DISTRIBUTIONS or (
            top.startswith("ex") and top[2:4].isdigit() and top not in own
        )

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names if bad_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and bad_module(node.module):
            found.append(f"line {line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if name in _IMPORTERS and any(bad_module(s) or any(m in s for m in _PATH_MARKERS) for s in strings):
                found.append(f"line {line}: {name}({strings[0]!r})")
            elif name == "open" and any(any(m in s for m in _PATH_MARKERS) for s in strings):
                found.append(f"line {line}: open({strings[0]!r})")
    return found[:5]


# ----------------------------------------------------------------------- grading
def _not_run(ex: Exercise, message: str) -> list[CheckResult]:
    return [CheckResult(c.name, c.function, c.hidden, False, 0, c.max_points, message, ran=False) for c in ex.checks]


def grade_exercise(
    ex: Exercise,
    files: dict[str, bytes],
    setup: Setup,
    *,
    timeout: float,
    run=None,
    refused: dict[str, str] | None = None,
) -> ExerciseResult:
    """Run one exercise's checks on the student's file and judge them.

    `run` replaces `sandbox.run_student` (same signature); the grader's own tests use
    it to run trusted mutant programs in-process. Never pass one for student code.
    """
    refused = refused or {}
    if ex.filename in refused:
        return ExerciseResult(ex, _not_run(ex, NOT_RUN),
                              notes=[f"{ex.filename} was not read: {refused[ex.filename]} (submit plain files)"],
                              missing=True)
    if ex.filename not in files:
        return ExerciseResult(ex, _not_run(ex, NOT_RUN),
                              notes=[f"{ex.filename} not found (run `tinytf exercises init DIR` to get the stubs)"],
                              missing=True)
    flags = []
    if setup.instructor is not None:  # every file of the submission: a helper module may hold the copy
        for name in sorted(files, key=lambda n: n != ex.filename):
            where = "" if name == ex.filename else f"{name}: "
            flags += [
                f"copied: {where}{mine} is the reference solution's {ref} once names, docstrings and formatting "
                "are ignored"
                for mine, ref in copied_functions(files[name], setup.instructor.sources[ex.id])
            ]
    reaching = forbidden_code(files[ex.filename], files)
    if reaching:
        return ExerciseResult(
            ex, _not_run(ex, "not run (the file was refused)"), flags=flags, refused=True,
            notes=[f"refused: {ex.filename} reaches for tinytf, a reference solution or another package "
                   f"({'; '.join(reaching)}). Exercises may import only the standard library, numpy, jax and "
                   "your own files: 0 points for this exercise"],
        )
    runs = [i for i, c in enumerate(ex.checks) if setup.graded or not c.hidden]
    inputs = {}
    for i in runs:
        check = ex.checks[i]
        if check.hidden:
            inputs[i] = draw_inputs(ex, i, setup.secret)
        else:
            inputs[i] = setup.bundle.visible[(ex.id, i)].inputs
    calls = [sandbox.Call(i, ex.checks[i].function, inputs[i]) for i in runs]
    result = (run or sandbox.run_student)(
        files, ex.filename, calls, timeout=timeout, sandbox=setup.use_sandbox,
        require_sealed=not setup.allow_unsealed, forbidden=setup.forbidden,
    )
    notes = []
    if result.violations:
        notes.append(
            f"refused: while it was graded, {ex.filename} tried what the sandbox forbids: "
            f"{'; '.join(result.violations[:3])}. 0 points for this exercise"
        )
    if result.import_error:
        where = f" ({result.import_where})" if result.import_where else ""
        hint = ""
        if "PermissionError" in result.import_error or "Permission denied" in result.import_error:
            hint = " — your code may read only its own folder, the standard library, numpy and jax"
        notes.append(f"importing {ex.filename} failed: {result.import_error}{where}{hint}")
    if result.status == "timeout":
        notes.append(
            f"time limit: the run took longer than {timeout:g} s and was stopped "
            f"({len(result.calls)} of {len(calls)} checks returned)"
        )
    elif result.status != "ok":
        notes.append(
            f"the run did not finish normally: {result.detail} ({len(result.calls)} of {len(calls)} checks returned)"
        )

    verdicts = {}
    for i in runs:
        check = ex.checks[i]
        if result.import_error:
            verdicts[i] = Verdict(False, NOT_RUN)
            continue
        verdicts[i] = judge_call(check, inputs[i], result.calls.get(i),
                                 lambda i=i: setup.oracle.expected(ex, i, inputs[i])[0])
    # Error handling pays only for a function that is also right on valid input.
    for i in runs:
        check = ex.checks[i]
        if not (check.raises and verdicts[i].passed):
            continue
        valid = [j for j in runs if ex.checks[j].function == check.function and not ex.checks[j].raises]
        failed = [j for j in valid if not verdicts[j].passed]
        if failed or not valid:
            verdicts[i] = Verdict(
                False,
                f"{check.function} raised {check.raises} as it should, but this point comes only with a correct "
                f"{check.function}: {len(failed)} of its {len(valid)} checks on valid input failed",
            )
    returned = {i: result.calls[i].outputs for i in result.calls if i in inputs and result.calls[i].outputs is not None}
    visible = [(i, ex.checks[i], inputs[i], returned[i]) for i in runs
               if not ex.checks[i].hidden and not ex.checks[i].raises and i in returned]
    failing = {i for i, _, _, _ in visible if not verdicts[i].passed}
    hints = diagnose(ex, visible, failing, setup.oracle) if failing else {}
    zeroed = bool(result.violations)
    checks = []
    for i, check in enumerate(ex.checks):
        if i not in verdicts:
            checks.append(CheckResult(check.name, check.function, True, False, 0, check.max_points,
                                      HIDDEN_NOT_RUN, ran=False))
            continue
        verdict = verdicts[i]
        message = verdict.message
        if i in failing:
            message += f"\n    inputs: {describe_inputs(inputs[i])}"
        passed = verdict.passed and not zeroed
        checks.append(CheckResult(check.name, check.function, check.hidden, passed,
                                  check.max_points if passed else 0, check.max_points,
                                  "" if verdict.passed else message, hints.get(i, []),
                                  refused_pass=verdict.passed and zeroed))
    return ExerciseResult(ex, checks, notes=notes, flags=flags, refused=zeroed, sandbox=result.sandbox,
                          sealed=result.sealed, output=result.output, seconds=result.seconds)


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def grade(directory, *, setup: Setup | None = None, **options) -> GradeReport:
    """Grade the exercises in `directory` (one student's workspace).

    Args:
      directory: folder holding the student's ``NN_slug.py`` files.
      setup: a prepared run (see `prepare`); else one is prepared from `options`
        (only, secret, secret_file, instructor_dir, allow_unsealed).
      **options: also timeout, jobs (see `grade_folders`).

    Returns:
      A GradeReport.
    """
    directory = Path(directory)
    run_options = {k: options.pop(k) for k in ("timeout", "jobs", "progress") if k in options}
    setup = setup or prepare(**options)
    check_workspace(directory, setup.exercises)
    return grade_folders({str(directory): directory}, setup, **run_options)[str(directory)]


def check_workspace(directory: Path, exercises) -> None:
    """Refuse, with what to do instead, a workspace that cannot be what the student meant.

    Raises:
      FileNotFoundError: `directory` is missing (with the closest name), a file, or
        holds none of the exercise files asked for (with a hint when its sub-folders
        do: a class folder, graded with --all).
    """
    init = "create one with `tinytf exercises init DIR`"
    if not directory.exists():
        raise FileNotFoundError(
            f"{directory} does not exist{near_miss(directory)}: expected the folder with your exercise files ({init})"
        )
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is a file, not a folder: pass the folder that holds your exercise files "
            f"(here: tinytf grade {directory.parent})"
        )
    wanted = [ex.filename for ex in exercises]
    if any((directory / name).exists() or (directory / name).is_symlink() for name in wanted):
        return
    which = ("the exercise files (" + ", ".join(wanted[:2]) + ", ...)") if len(wanted) > 2 else " or ".join(wanted)
    nested = sorted(p.name for p in directory.iterdir() if p.is_dir() and any(p.glob("[0-9][0-9]_*.py")))
    if nested:
        hint = (f"; sub-folders of it do ({', '.join(nested[:3])}{', ...' if len(nested) > 3 else ''}): to grade one, "
                f"tinytf grade {directory / nested[0]}; instructors grading a class: tinytf grade --all {directory}")
    else:
        hint = f"; get the stubs with `tinytf exercises init {directory}`, or pass the folder that has your files"
    raise FileNotFoundError(f"{directory} holds none of {which}{hint}")


def grade_folders(
    folders: dict[str, Path],
    setup: Setup,
    *,
    timeout: float = 30.0,
    jobs: int | None = None,
    progress: bool | None = False,
) -> dict[str, GradeReport]:
    """Grade several workspaces, sharing one pool of child processes.

    Args:
      folders: name -> folder holding ``NN_slug.py`` files.
      setup: see `prepare`.
      timeout: wall-clock seconds per exercise (one child process each).
      jobs: child processes at a time (default: up to 4, at most the CPU count).
      progress: a progress bar (None: follow tinytf's quiet switch).

    Returns:
      name -> GradeReport, in the order of `folders`.
    """
    exercises = setup.exercises
    workspaces = {name: read_workspace(Path(folder)) for name, folder in folders.items()}
    tasks = [(name, ex) for name in folders for ex in exercises]
    bar = progress_bar(len(tasks), desc="grading", unit="exercise", enabled=progress)

    def task(name_ex):
        name, ex = name_ex
        files, refused = workspaces[name]
        try:
            return grade_exercise(ex, files, setup, timeout=timeout, refused=refused)
        finally:
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
            results = list(pool.map(task, tasks))
    finally:
        bar.close()
    n_all = len(setup.bundle.exercises)
    fingerprint = secret_fingerprint(setup.secret) if setup.secret else None
    reports = {}
    for k, name in enumerate(folders):
        chunk = results[k * len(exercises) : (k + 1) * len(exercises)]
        reports[name] = GradeReport(str(folders[name]), chunk, complete=len(exercises) == n_all,
                                    graded=setup.graded, secret=fingerprint, n_exercises=n_all)
    return reports
