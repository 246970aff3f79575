"""Grading a class: a folder with one sub-folder per student, graded into a new run folder.

    tinytf grade --all SUBMISSIONS [--out grades]

writes, in a folder of its own that no later run overwrites (``grades/run-YYYYmmdd-HHMMSS``,
with a suffix when two runs start in the same second):

    grades.csv        one row per student: totals, flags, points per exercise, points per
                      check (a column each), missing files, notes
    grades.json       everything, per student and per check (for scripts)
    feedback/NAME.txt one file per student to hand back: every check with passed or not,
                      points and, for visible checks, the message; hidden checks say only
                      whether they passed
    run.txt           when, which exercises, the secret's fingerprint, the sandbox's protections

A folder that holds no submissions is an error; a submission that lacks exercise files
is graded (0 for what is missing) and named at the end, with a non-zero exit status.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tinytf.grading.report import GradeReport, format_feedback, write_csv
from tinytf.grading.instructor import near_miss
from tinytf.grading.runner import Setup, grade_folders

EXERCISE_FILE = re.compile(r"^\d\d_[a-z0-9_]+\.py$")


class SubmissionsError(ValueError):
    """The submissions folder is missing, empty or not laid out as one sub-folder per student."""


def find_submissions(root) -> dict[str, Path]:
    """name -> folder for every sub-folder of `root` (hidden folders and links skipped).

    Raises:
      SubmissionsError: with a message that says what was found and what was expected.
    """
    root = Path(root)
    if not root.exists():
        raise SubmissionsError(
            f"{root} does not exist{near_miss(root)}: expected a folder with one sub-folder per student"
        )
    if not root.is_dir():
        raise SubmissionsError(f"{root} is a file, not a folder: expected a folder with one sub-folder per student")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    own = sorted(p.name for p in root.glob("*.py") if EXERCISE_FILE.match(p.name))
    if not subs:
        if own:
            raise SubmissionsError(
                f"{root} holds exercise files itself ({', '.join(own[:3])}{', ...' if len(own) > 3 else ''}) and no "
                f"sub-folders: --all expects one sub-folder per student. To grade this one workspace: "
                f"tinytf grade {root}"
            )
        raise SubmissionsError(
            f"{root} holds no submissions: expected one sub-folder per student, each holding that student's "
            "NN_name.py files (e.g. alice/01_softmax.py)"
        )
    if not any(EXERCISE_FILE.match(f.name) for p in subs for f in p.glob("*.py")):
        raise SubmissionsError(
            f"none of the {len(subs)} sub-folders of {root} holds an exercise file (NN_name.py, e.g. "
            f"01_softmax.py): is this the submissions folder? (sub-folders: "
            f"{', '.join(p.name for p in subs[:5])}{', ...' if len(subs) > 5 else ''})"
        )
    return {p.name: p for p in subs}


def new_run_dir(out_root) -> Path:
    """A new, empty folder under `out_root` for this run; never an existing one."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("run-%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        path = out_root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run folder in {out_root}")  # pragma: no cover


def _file_names(names) -> dict[str, str]:
    """Submission name -> a safe, unique file stem."""
    out, used = {}, set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "submission"
        candidate, k = stem, 2
        while candidate.lower() in used:
            candidate, k = f"{stem}-{k}", k + 1
        used.add(candidate.lower())
        out[name] = candidate
    return out


def write_run(run_dir: Path, reports: dict[str, GradeReport], setup: Setup, root, seconds: float) -> None:
    """Write grades.csv, grades.json, feedback/*.txt and run.txt into `run_dir`."""
    write_csv(reports, setup.exercises, run_dir / "grades.csv")
    (run_dir / "grades.json").write_text(
        json.dumps({name: r.to_json() for name, r in reports.items()}, indent=1) + "\n"
    )
    feedback = run_dir / "feedback"
    feedback.mkdir()
    for name, stem in _file_names(reports).items():
        (feedback / f"{stem}.txt").write_text(format_feedback(name, reports[name]))
    probe = setup.probe.sandbox if setup.probe is not None else "not probed"
    first = next(iter(reports.values()))
    (run_dir / "run.txt").write_text(
        f"submissions: {Path(root).resolve()}\n"
        f"graded: {time.strftime('%Y-%m-%d %H:%M:%S')} in {seconds:.1f} s\n"
        f"exercises: {', '.join(e.id for e in setup.exercises)}\n"
        f"assignment secret (fingerprint): {first.secret}\n"
        f"sandbox: {probe}\n"
    )


def grade_class(root, setup: Setup, *, out="grades", timeout: float = 30.0, jobs=None,
                progress: bool | None = None) -> tuple[Path, dict[str, GradeReport]]:
    """Grade every submission in `root` into a new run folder under `out`; returns (run folder, reports)."""
    subs = find_submissions(root)
    start = time.monotonic()
    reports = grade_folders(subs, setup, timeout=timeout, jobs=jobs, progress=progress)
    run_dir = new_run_dir(out)
    write_run(run_dir, reports, setup, root, time.monotonic() - start)
    return run_dir, reports
