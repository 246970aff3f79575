"""Grading results and how they are shown: the table, the JSON object, the CSV.

Honesty rules for the summary: it counts visible and hidden checks separately,
and it says "All N checks passed" only when every check of every exercise ran and
passed; when only some exercises were graded (--only) it says how many were not.
Hidden checks contribute one line, "k of n failed", never their inputs or values.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from tinytf.grading.catalogue import EXERCISES
from tinytf.grading.core import NO_RESULT, NOT_IMPLEMENTED, Exercise

NOT_RUN = "not run (the file could not be imported)"


@dataclass
class CheckResult:
    """One check's outcome; `message` and `hints` are shown only for visible checks."""

    name: str
    function: str
    hidden: bool
    passed: bool
    points: int
    max_points: int
    message: str = ""
    hints: list[str] = field(default_factory=list)


@dataclass
class ExerciseResult:
    """One exercise's checks, with notes about the run (missing file, time limit, ...)."""

    exercise: Exercise
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)  # about the run: missing file, timeout, import error
    sandbox: str = ""
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_points(self) -> int:
        return self.exercise.max_points

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def failed(self) -> int:
        return len(self.checks) - self.passed

    def messages(self) -> list[str]:
        """Feedback lines: notes, then one message per failing visible check, then the hidden summary."""
        out = list(self.notes)
        stubs = {}  # function -> message, for functions that still raise NotImplementedError
        errors: dict[str, list[str]] = {}  # message -> names of the checks that raised it
        no_result = [c for c in self.checks if not c.passed and not c.hidden and c.message == NO_RESULT]
        for c in self.checks:
            if c.passed or c.hidden or c.message in (NO_RESULT, NOT_RUN):
                continue
            if c.message.startswith(NOT_IMPLEMENTED):
                stubs.setdefault(c.function, f"{c.function}: {c.message}")
                continue
            if "\n    inputs: " not in c.message and not c.hints:  # an error, the same for every input
                errors.setdefault(c.message, []).append(c.name)
                continue
            line = f"{c.name}: {c.message}"
            for h in c.hints:
                line += f"\n    likely mistake: {h}"
            out.append(line)
        for message, names in errors.items():
            out.append(f"{names[0]}: {message}" if len(names) == 1 else f"{message} (in {len(names)} checks)")
        out[len(self.notes) : len(self.notes)] = list(stubs.values())
        if no_result:
            names = ", ".join(c.name for c in no_result[:3]) + (", ..." if len(no_result) > 3 else "")
            out.append(f"{len(no_result)} visible check(s) got no result: {names}")
        hidden = [c for c in self.checks if c.hidden]
        failed_hidden = [c for c in hidden if not c.passed]
        if failed_hidden:
            out.append(
                f"hidden checks: {len(failed_hidden)} of {len(hidden)} failed "
                "(their inputs and expected values are not shown)"
            )
        return out

    def to_json(self) -> dict:
        return {
            "id": self.exercise.id,
            "points": self.points,
            "max": self.max_points,
            "passed": self.passed,
            "failed": self.failed,
            "messages": self.messages(),
        }


@dataclass
class GradeReport:
    """A graded workspace: the per-exercise results, in course order."""

    directory: str
    results: list[ExerciseResult]
    complete: bool  # every exercise of the course was graded (no --only)

    @property
    def total(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> int:
        return sum(r.max_points for r in self.results)

    def counts(self) -> dict:
        checks = [c for r in self.results for c in r.checks]
        visible = [c for c in checks if not c.hidden]
        hidden = [c for c in checks if c.hidden]
        return {
            "visible": len(visible),
            "hidden": len(hidden),
            "visible_passed": sum(c.passed for c in visible),
            "hidden_passed": sum(c.passed for c in hidden),
        }

    @property
    def all_passed(self) -> bool:
        """True only when every check of every exercise ran and passed."""
        return self.complete and all(c.passed for r in self.results for c in r.checks)

    def sandboxes(self) -> list[str]:
        return sorted({r.sandbox for r in self.results if r.sandbox})

    def to_json(self) -> dict:
        n = self.counts()
        return {
            "total": self.total,
            "max": self.max_points,
            "exercises": [r.to_json() for r in self.results],
            "checks": n,
            "complete": self.complete,
            "all_passed": self.all_passed,
            "sandbox": self.sandboxes(),
        }


# ----------------------------------------------------------------------- reports
def summary_line(report: GradeReport) -> str:
    n = report.counts()
    total_checks = n["visible"] + n["hidden"]
    passed = n["visible_passed"] + n["hidden_passed"]
    counts = f"visible {n['visible_passed']}/{n['visible']}, hidden {n['hidden_passed']}/{n['hidden']}"
    if report.all_passed:
        return (
            f"All {total_checks} checks passed ({n['visible']} visible, {n['hidden']} hidden): "
            f"{report.total}/{report.max_points} points."
        )
    line = f"{report.total}/{report.max_points} points; checks passed {passed}/{total_checks} ({counts})."
    if not report.complete:
        left = len(EXERCISES) - len(report.results)
        line += f" Only {len(report.results)} of {len(EXERCISES)} exercises were graded ({left} not run)."
    return line


def format_report(report: GradeReport, *, feedback: bool = True) -> str:
    """The table students read: exercise, checks passed/total, points; then the feedback."""
    rows = [("exercise", "lesson", "visible", "hidden", "points")]
    for r in report.results:
        vis = [c for c in r.checks if not c.hidden]
        hid = [c for c in r.checks if c.hidden]
        rows.append(
            (
                r.exercise.id,
                r.exercise.lesson,
                f"{sum(c.passed for c in vis)}/{len(vis)}",
                f"{sum(c.passed for c in hid)}/{len(hid)}",
                f"{r.points}/{r.max_points}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"Grading {report.directory}"]
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(summary_line(report))
    if all(
        any(n.endswith("not found (run `tinytf exercises init DIR` to get the stubs)") for n in r.notes)
        for r in report.results
    ):
        lines.append(
            f"No exercise files were found in {report.directory}: is it the folder `tinytf exercises init` wrote?"
        )
    boxes = report.sandboxes()
    if boxes:
        lines.append(f"Student code ran in child processes; sandbox: {'; '.join(boxes)}.")
    if feedback:
        for r in report.results:
            msgs = r.messages()
            if msgs:
                lines.append("")
                lines.append(f"{r.exercise.id} ({r.points}/{r.max_points}):")
                for m in msgs:
                    lines.append("  - " + m.replace("\n", "\n  "))
    return "\n".join(lines)


def _csv_cell(value: str) -> str:
    """Neutralise spreadsheet formulas in names taken from the file system."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csv(reports: dict[str, GradeReport], exercises, path) -> None:
    """One row per submission: totals, check counts, points per exercise, notes."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["submission", "total", "max", "visible_passed", "visible", "hidden_passed", "hidden"]
            + [e.id for e in exercises]
            + ["notes"]
        )
        for name, rep in reports.items():
            n = rep.counts()
            by_id = {r.exercise.id: r for r in rep.results}
            notes = "; ".join(note for r in rep.results for note in r.notes)
            w.writerow(
                [
                    _csv_cell(name),
                    rep.total,
                    rep.max_points,
                    n["visible_passed"],
                    n["visible"],
                    n["hidden_passed"],
                    n["hidden"],
                ]
                + [by_id[e.id].points for e in exercises]
                + [_csv_cell(notes)]
            )
