"""The exercises and an autograder an instructor can trust.

Students rebuild the pieces of tinytf in ``NN_slug.py`` files (numpy or jax.numpy);
`tinytf grade` runs them in a sealed child process and checks them, with feedback
that names the classic mistake a wrong answer matches. What a student installs
holds no answer: the reference solutions, the input generators and the mutant
programs live on the instructor's side (``exercises/instructor`` in a checkout),
and the package ships only what the visible checks need (`bundle`).

Read in this order:
  core.py        checks, mutants, verdicts and feedback
  judges.py      custom verdicts (the matching exercise)
  bundle.py      the student side: visible checks precomputed and shipped in data/
  instructor.py  the instructor side: references, catalogue, the assignment secret
  sandbox.py     running student code in a sealed child process (+ _child.py)
  similarity.py  is a submission a reference with its names changed?
  runner.py      grading a workspace, in practice or graded mode
  report.py      results, the table, feedback files, JSON and CSV
  classroom.py   grading a folder of submissions into a new run folder
  plug.py        a student's finished exercises inside tinytf (`tinytf lesson ID --use DIR`)

Public API:
  exercises()                               the exercises in course order (public descriptions)
  init_workspace(dir) -> (written, skipped)
  prepare(only=None, secret=..., ...) -> Setup   practice or graded, sandbox probed
  grade(dir, **options) -> GradeReport
  grade_class(root, setup, out=...) -> (run folder, {name: GradeReport})
  format_report(report) -> str ; report.to_json() -> dict
  register_cli(subparsers)   `tinytf exercises list|init|secret|bundle`, `tinytf grade`
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tinytf.apps.args import positive_float, positive_int, writable_dir
from tinytf.grading.bundle import DATA_DIR, BundleError, build_bundle, read_bundle, shipped_bundle
from tinytf.grading.classroom import SubmissionsError, grade_class
from tinytf.grading.instructor import (INSTRUCTOR_ENV, SECRET_ENV, InstructorError, find_instructor_dir,
                                       load_instructor, new_secret)
from tinytf.grading.report import ExerciseResult, GradeReport, format_report
from tinytf.grading.runner import grade, prepare
from tinytf.grading.sandbox import PACKAGE_DIR, SandboxError
from tinytf.progress import is_quiet

__all__ = [
    "ExerciseResult",
    "GradeReport",
    "exercises",
    "format_report",
    "grade",
    "grade_class",
    "init_workspace",
    "prepare",
    "register_cli",
]


def exercises():
    """The exercises in course order, as students see them (no generators, no mutant programs)."""
    return shipped_bundle().exercises


def init_workspace(directory) -> tuple[list[Path], list[Path]]:
    """Write the student stubs into `directory`, never overwriting a file that exists.

    The stubs come from the bundle shipped with tinytf, so this works from a wheel too.

    Returns:
      (written, skipped) lists of paths in `directory`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bundle = shipped_bundle()
    written, skipped = [], []
    for ex in bundle.exercises:
        target = directory / ex.filename
        if target.exists():
            skipped.append(target)
            continue
        target.write_text(bundle.stubs[ex.id])
        written.append(target)
    return written, skipped


# ----------------------------------------------------------------------- command line
def _cmd_list(args) -> int:
    rows = [("exercise", "lesson", "functions", "checks", "points", "what")]
    exs = exercises()
    for ex in exs:
        vis = sum(not c.hidden for c in ex.checks)
        rows.append(
            (
                ex.id,
                ex.lesson,
                ", ".join(ex.functions),
                f"{vis}+{len(ex.checks) - vis} hidden",
                f"{ex.visible_points}+{ex.hidden_points}",
                ex.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    vis = sum(e.visible_points for e in exs)
    hid = sum(e.hidden_points for e in exs)
    print(
        f"\n{len(exs)} exercises, {vis + hid} points: {vis} from visible checks (you can run them), {hid} from "
        "hidden checks (your instructor runs them).\nStart with `tinytf exercises init DIR`, then `tinytf grade DIR`."
    )
    return 0


def _cmd_init(args) -> int:
    try:
        written, skipped = init_workspace(args.dir)
    except (BundleError, OSError) as err:
        print(f"tinytf exercises init: {err}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote   {p}")
    for p in skipped:
        print(f"skipped {p} (exists; not overwritten)")
    print(f"\n{len(written)} written, {len(skipped)} skipped. Edit the files, then run `tinytf grade {args.dir}`.")
    return 0


def _cmd_secret(args) -> int:
    path = Path(args.path)
    try:
        with open(path, "x") as f:  # never overwrite a secret: grades made with it could not be reproduced
            f.write(new_secret() + "\n")
        path.chmod(0o600)
    except FileExistsError:
        print(f"tinytf exercises secret: {path} exists; a secret is never overwritten (grades made with it "
              "could not be reproduced). Choose another path.", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"tinytf exercises secret: cannot write {path} ({err.strerror})", file=sys.stderr)
        return 2
    print(f"wrote a new assignment secret to {path} (readable by you only). Keep it off the course's web pages\n"
          f"and out of the stubs; grade with `tinytf grade --all SUBMISSIONS --secret-file {path}`\n"
          f"(or export {SECRET_ENV}=\"$(cat {path})\").")
    return 0


def _cmd_bundle(args) -> int:
    try:
        root = find_instructor_dir(args.instructor)
        if root is None:
            raise InstructorError("no instructor folder: run from a tinytf checkout or pass --instructor DIR")
        instructor = load_instructor(root)
        stubs = Path(args.stubs) if args.stubs else PACKAGE_DIR.parent / "exercises"
        if args.check:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                fresh = read_bundle(build_bundle(instructor, stubs, tmp))
            ok = _same_bundle(fresh, read_bundle(DATA_DIR))
            print("the shipped bundle is up to date" if ok else
                  "the shipped bundle is out of date: run `tinytf exercises bundle`")
            return 0 if ok else 1
        build_bundle(instructor, stubs, DATA_DIR)
    except (InstructorError, BundleError, OSError) as err:
        print(f"tinytf exercises bundle: {err}", file=sys.stderr)
        return 2
    print(f"wrote {DATA_DIR / 'manifest.json'} and {DATA_DIR / 'visible.npz'}")
    return 0


def _same_bundle(a, b) -> bool:
    """Same exercises, stubs and visible inputs; expected values equal to 1e-12 (BLAS may differ in the last bit)."""
    import numpy as np

    from tinytf.grading.bundle import public_entry

    if [public_entry(e) for e in a.exercises] != [public_entry(e) for e in b.exercises] or a.stubs != b.stubs:
        return False
    if a.visible.keys() != b.visible.keys():
        return False

    def close(x, y):
        if x is None or y is None:
            return x is y
        return len(x) == len(y) and all(
            p.shape == q.shape and p.dtype == q.dtype and np.allclose(p, q, rtol=1e-12, atol=1e-12, equal_nan=True)
            for p, q in zip(x, y))

    for key, v in a.visible.items():
        w = b.visible[key]
        if v.inputs.keys() != w.inputs.keys() or v.mutants.keys() != w.mutants.keys():
            return False
        for k in v.inputs:
            p, q = v.inputs[k], w.inputs[k]
            if isinstance(p, np.ndarray) != isinstance(q, np.ndarray) or not np.array_equal(p, q):
                return False
        if not close(v.expected, w.expected) or not all(close(v.mutants[m], w.mutants[m]) for m in v.mutants):
            return False
    return True


def _setup(args, *, need_secret: bool):
    return prepare(args.only, secret_file=args.secret_file, instructor_dir=args.instructor, need_secret=need_secret,
                   allow_unsealed=args.allow_unsealed)


def _cmd_grade(args) -> int:
    progress = not (args.grade_quiet or is_quiet() or args.json)
    try:
        if args.all is not None:
            if args.dir is not None:
                raise ValueError(f"give either a folder to grade ({args.dir}) or --all SUBMISSIONS, not both")
            from tinytf.grading.classroom import find_submissions

            find_submissions(args.all)  # a mistyped or empty folder fails before anything slow
            setup = _setup(args, need_secret=True)
            run_dir, reports = grade_class(args.all, setup, out=args.out, timeout=args.timeout, jobs=args.jobs,
                                           progress=progress)
            return _print_class(args, run_dir, reports)
        setup = _setup(args, need_secret=False)
        report = grade(args.dir or ".", setup=setup, timeout=args.timeout, jobs=args.jobs, progress=progress)
    except (FileNotFoundError, ValueError, InstructorError, SubmissionsError, SandboxError, BundleError) as err:
        print(f"tinytf grade: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_report(report))
    ran = [c for r in report.results for c in r.checks if c.ran]
    return 0 if ran and all(c.passed for c in ran) else 1


def _print_class(args, run_dir: Path, reports: dict) -> int:
    if args.json:
        print(json.dumps({name: r.to_json() for name, r in reports.items()}, indent=1))
    else:
        width = max([len("submission")] + [len(n) for n in reports])
        print(f"{'submission'.ljust(width)}  points   checks passed (visible, hidden)  flags")
        for name, r in reports.items():
            n = r.counts()
            print(
                f"{name.ljust(width)}  {r.total:>3}/{r.max_points:<4} "
                f"{n['visible_passed']:>3}/{n['visible']}, {n['hidden_passed']}/{n['hidden']}"
                f"{'':14}{_flag_summary(name, r.flags)}"
            )
    lacking = {name: r.missing for name, r in reports.items() if r.missing}
    print(f"\nwrote {run_dir}/: grades.csv, grades.json, feedback/ (one file per student), run.txt",
          file=sys.stderr if args.json else sys.stdout)
    if lacking:
        print(f"\n{len(lacking)} of {len(reports)} submission(s) lack exercise files (graded 0 for them):",
              file=sys.stderr)
        for name, files in lacking.items():
            print(f"  {name}: {', '.join(files)}", file=sys.stderr)
        return 1
    return 0


def _flag_summary(name: str, flags: list[str]) -> str:
    """One short cell for the class table: which exercises are flagged; the flags are in full in the feedback file."""
    if not flags:
        return ""
    exercises = list(dict.fromkeys(f.split(":", 1)[0] for f in flags))
    shown = ", ".join(exercises[:3]) + (f" (+{len(exercises) - 3} more)" if len(exercises) > 3 else "")
    return f"{len(flags)} flag(s) in {shown}: see feedback/{name}.txt"


def register_cli(subparsers) -> None:
    """Add `tinytf exercises list|init|secret|bundle` and `tinytf grade` to the CLI."""
    ex = subparsers.add_parser(
        "exercises",
        help="the student exercises: list them, copy the stubs to a folder (instructors: make a secret)",
        description="The student exercises (see README, 'Exercises').",
    )
    ex_sub = ex.add_subparsers(dest="exercises_command", metavar="ACTION")
    ex.set_defaults(func=_cmd_list)
    p = ex_sub.add_parser("list", help="list the exercises in course order")
    p.set_defaults(func=_cmd_list)
    p = ex_sub.add_parser("init", help="copy the stubs into DIR (never overwrites a file)")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_cmd_init)
    p = ex_sub.add_parser("secret", help="instructors: write a new random assignment secret to PATH")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=_cmd_secret)
    p = ex_sub.add_parser("bundle", help="maintainers: rebuild the student-side bundle from a checkout")
    p.add_argument("--check", action="store_true", help="only say whether the shipped bundle is up to date")
    p.add_argument("--instructor", metavar="DIR", default=None, help="the instructor folder")
    p.add_argument("--stubs", metavar="DIR", default=None, help="the stubs (default: the checkout's exercises/)")
    p.set_defaults(func=_cmd_bundle)

    g = subparsers.add_parser(
        "grade",
        help="grade your exercises (instructors: a class, with --all)",
        description="Run the checks on the exercise files in DIR and print a table with feedback. Without the "
        f"assignment secret (${SECRET_ENV} or --secret-file) only the visible checks run (practice). "
        "Exit status: 0 if every check that ran passed, 1 if not (with --all: if a submission lacks files), "
        "2 on errors.",
    )
    g.add_argument("dir", nargs="?", default=None, metavar="DIR", help="folder with your NN_name.py files (default .)")
    g.add_argument(
        "--only",
        action="append",
        metavar="EX",
        help="grade only these exercises (e.g. 01, softmax; repeat or comma-separate)",
    )
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    g.add_argument("--all", metavar="SUBMISSIONS", help="instructors: grade every sub-folder of SUBMISSIONS "
                   "(one per student) into a new folder under --out")
    g.add_argument("--out", type=writable_dir, default="grades", metavar="DIR",
                   help="with --all: each run writes a new folder DIR/run-DATE-TIME (default grades/)")
    g.add_argument("--secret-file", metavar="PATH", default=None,
                   help=f"the assignment secret (default: ${SECRET_ENV}); needed for hidden checks and --all")
    g.add_argument("--instructor", metavar="DIR", default=None,
                   help=f"the instructor folder (default: ${INSTRUCTOR_ENV}, else exercises/instructor in a checkout)")
    g.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per exercise (default 30)")
    g.add_argument("--jobs", type=positive_int, default=None, help="child processes at a time (default: up to 4)")
    g.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="run student code even where this machine cannot seal the sandbox (no Landlock or seccomp)",
    )
    g.add_argument("--quiet", dest="grade_quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_grade)
