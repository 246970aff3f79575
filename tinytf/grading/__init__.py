"""The exercises and an autograder you can trust.

Students rebuild the pieces of tinytf in ``exercises/NN_slug.py`` (numpy or
jax.numpy); `tinytf grade` checks them against reference solutions kept inside
this package, with feedback that names the classic mistake a wrong answer matches.

Read in this order:
  catalogue/   the exercises, their checks (visible and hidden) and mutants
  core.py      checks, mutants, verdicts and feedback
  sandbox.py   running student code in a locked-down child process (+ _child.py)
  runner.py    grading a workspace or a folder of submissions
  report.py    results, the table, JSON and CSV
  reference/   the reference solutions (never copied to students, unreadable by them)

Public API:
  EXERCISES                               the exercises in course order
  init_workspace(dir) -> (written, skipped)
  grade(dir, *, only=None, timeout=30, jobs=None) -> GradeReport
  grade_submissions(root, *, csv_path=None, ...) -> {name: GradeReport}
  format_report(report) -> str ; report.to_json() -> dict
  register_cli(subparsers)                `tinytf exercises list|init DIR`, `tinytf grade`
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tinytf.apps.args import positive_float, positive_int
from tinytf.grading.catalogue import EXERCISES
from tinytf.grading.report import ExerciseResult, GradeReport, format_report
from tinytf.grading.runner import grade, grade_submissions
from tinytf.grading.sandbox import PACKAGE_DIR

__all__ = [
    "EXERCISES",
    "ExerciseResult",
    "GradeReport",
    "format_report",
    "grade",
    "grade_submissions",
    "init_workspace",
    "register_cli",
    "stubs_dir",
]


def stubs_dir() -> Path:
    """The folder holding the student stubs (``exercises/`` next to the package in a checkout)."""
    path = PACKAGE_DIR.parent / "exercises"
    if not path.is_dir():
        raise FileNotFoundError(
            f"the exercise stubs were not found at {path}: install tinytf from a source "
            "checkout (pip install -e .) to use the exercises"
        )
    return path


def init_workspace(directory) -> tuple[list[Path], list[Path]]:
    """Copy the student stubs into `directory`, never overwriting a file that exists.

    Returns:
      (written, skipped) lists of paths in `directory`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for ex in EXERCISES:
        target = directory / ex.filename
        if target.exists():
            skipped.append(target)
            continue
        shutil.copyfile(stubs_dir() / ex.filename, target)
        written.append(target)
    return written, skipped


# ----------------------------------------------------------------------- command line
def _cmd_list(args) -> int:
    rows = [("exercise", "lesson", "functions", "checks", "points", "what")]
    for ex in EXERCISES:
        vis = sum(not c.hidden for c in ex.checks)
        rows.append(
            (
                ex.id,
                ex.lesson,
                ", ".join(ex.functions),
                f"{vis}+{len(ex.checks) - vis} hidden",
                str(ex.max_points),
                ex.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for k, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    print(
        f"\n{len(EXERCISES)} exercises, {sum(e.max_points for e in EXERCISES)} points. "
        "Start with `tinytf exercises init DIR`, then `tinytf grade DIR`."
    )
    return 0


def _cmd_init(args) -> int:
    try:
        written, skipped = init_workspace(args.dir)
    except (FileNotFoundError, OSError) as err:
        print(f"tinytf exercises init: {err}", file=sys.stderr)
        return 2
    for p in written:
        print(f"wrote   {p}")
    for p in skipped:
        print(f"skipped {p} (exists; not overwritten)")
    print(f"\n{len(written)} written, {len(skipped)} skipped. Edit the files, then run `tinytf grade {args.dir}`.")
    return 0


def _cmd_grade(args) -> int:
    options = dict(only=args.only, timeout=args.timeout, jobs=args.jobs, require_sandbox=args.require_sandbox)
    try:
        if args.all is not None:
            reports = grade_submissions(args.all, csv_path=args.csv, **options)
            if args.json:
                print(json.dumps({name: r.to_json() for name, r in reports.items()}, indent=1))
            else:
                width = max([len("submission")] + [len(n) for n in reports])
                print(f"{'submission'.ljust(width)}  points  checks passed (visible, hidden)")
                for name, r in reports.items():
                    n = r.counts()
                    print(
                        f"{name.ljust(width)}  {r.total:>3}/{r.max_points:<3} "
                        f"{n['visible_passed']}/{n['visible']}, {n['hidden_passed']}/{n['hidden']}"
                    )
                if args.csv:
                    print(f"\nwrote {args.csv}")
            return 0
        if args.csv:
            print("tinytf grade: --csv needs --all SUBMISSIONS_DIR", file=sys.stderr)
            return 2
        report = grade(args.dir, **options)
    except (FileNotFoundError, ValueError) as err:
        print(f"tinytf grade: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_report(report))
    return 0 if all(c.passed for r in report.results for c in r.checks) else 1


def register_cli(subparsers) -> None:
    """Add `tinytf exercises list|init DIR` and `tinytf grade [DIR]` to the CLI."""
    ex = subparsers.add_parser(
        "exercises",
        help="the student exercises: list them, or copy the stubs to a folder",
        description="The student exercises (see README, 'Exercises').",
    )
    ex_sub = ex.add_subparsers(dest="exercises_command", metavar="ACTION")
    ex.set_defaults(func=_cmd_list)
    p = ex_sub.add_parser("list", help="list the exercises in course order")
    p.set_defaults(func=_cmd_list)
    p = ex_sub.add_parser("init", help="copy the stubs into DIR (never overwrites a file)")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_cmd_init)

    g = subparsers.add_parser(
        "grade",
        help="grade your exercises (or, with --all, a folder of submissions)",
        description="Run the checks on the exercise files in DIR and print a table with "
        "feedback. Exit status: 0 if every check passed, 1 if not, 2 on errors.",
    )
    g.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder with your NN_name.py files (default .)")
    g.add_argument(
        "--only",
        action="append",
        metavar="EX",
        help="grade only these exercises (e.g. 01, softmax; repeat or comma-separate)",
    )
    g.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    g.add_argument("--all", metavar="SUBMISSIONS_DIR", help="grade every sub-folder of SUBMISSIONS_DIR (instructors)")
    g.add_argument("--csv", metavar="PATH", help="with --all: write one row per submission to PATH")
    g.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per exercise (default 30)")
    g.add_argument("--jobs", type=positive_int, default=None, help="child processes at a time (default: up to 4)")
    g.add_argument(
        "--require-sandbox",
        action="store_true",
        help="refuse to run student code where the Landlock sandbox is unavailable",
    )
    g.set_defaults(func=_cmd_grade)
