"""Grading results and how they are shown: the table, the feedback, JSON and CSV.

Honesty rules for the summary: it counts visible and hidden checks separately; it
says "All N checks passed" only when every check of every exercise ran and passed
(in graded mode); in practice mode it says how many hidden checks were left to the
instructor; when only some exercises were graded (--only) it says how many were not.
Hidden checks contribute one line, "k of n failed", never their inputs or values.
What a submission printed is shown, capped, with unprintable characters replaced.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

from tinytf.grading.core import NO_RESULT, NOT_IMPLEMENTED, Exercise

NOT_RUN = "not run (the file could not be imported)"
PRINTED_LINES = 20  # lines of printed output shown per exercise
PRINTED_CHARS = 2000


@dataclass
class CheckResult:
    """One check's outcome; `message` and `hints` are shown to students only for visible checks."""

    name: str
    function: str
    hidden: bool
    passed: bool
    points: int
    max_points: int
    message: str = ""
    hints: list[str] = field(default_factory=list)
    ran: bool = True  # False: a hidden check in practice mode, or a file that was missing/refused
    refused_pass: bool = False  # the value was right, but the exercise was refused (sandbox violation)


@dataclass
class ExerciseResult:
    """One exercise's checks, with notes about the run (missing file, time limit, ...)."""

    exercise: Exercise
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)  # about the run: missing file, timeout, import error
    flags: list[str] = field(default_factory=list)  # for the instructor: copied from a reference
    refused: bool = False  # 0 points: the file reached for tinytf/a reference, or broke the sandbox's rules
    sandbox: str = ""
    sealed: bool = False
    output: str = ""  # what the submission printed (capped by the sandbox)
    seconds: float = 0.0
    missing: bool = False  # the file was not there (or not a plain file)

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
        return sum(c.ran and not c.passed for c in self.checks)

    def printed(self) -> list[str]:
        """What the submission printed: at most PRINTED_LINES lines / PRINTED_CHARS characters, cleaned."""
        text = self.output[:PRINTED_CHARS]
        lines = ["".join(ch if ch.isprintable() else "?" for ch in ln) for ln in text.splitlines()]
        lines = [ln for ln in lines if ln.strip()]
        cut = len(lines) > PRINTED_LINES or len(self.output) > PRINTED_CHARS
        return lines[:PRINTED_LINES] + (["... (more was printed; cut here)"] if cut else [])

    def messages(self) -> list[str]:
        """Feedback lines: notes, flags, then one message per failing visible check, then the hidden summary."""
        out = list(self.notes) + [f"flag: {f}" for f in self.flags]
        head = len(out)
        stubs = {}  # function -> message, for functions that still raise NotImplementedError
        errors: dict[str, list[str]] = {}  # message -> names of the checks that raised it
        no_result = [c for c in self.checks if c.ran and not c.passed and not c.hidden and c.message == NO_RESULT]
        for c in self.checks:
            if c.passed or c.hidden or not c.ran or c.message in (NO_RESULT, NOT_RUN) or c.refused_pass:
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
        out[head:head] = list(stubs.values())
        if no_result:
            names = ", ".join(c.name for c in no_result[:3]) + (", ..." if len(no_result) > 3 else "")
            out.append(f"{len(no_result)} visible check(s) got no result: {names}")
        hidden = [c for c in self.checks if c.hidden and c.ran]
        failed_hidden = [c for c in hidden if not c.passed and not c.refused_pass]
        if failed_hidden:
            out.append(
                f"hidden checks: {len(failed_hidden)} of {len(hidden)} failed "
                "(their inputs and expected values are not shown)"
            )
        printed = self.printed()
        if printed:
            out.append("your code printed:\n  | " + "\n  | ".join(printed))
        return out

    def to_json(self) -> dict:
        return {
            "id": self.exercise.id,
            "points": self.points,
            "max": self.max_points,
            "passed": self.passed,
            "failed": self.failed,
            "refused": self.refused,
            "flags": list(self.flags),
            "messages": self.messages(),
            "checks": [
                {"name": c.name, "function": c.function, "hidden": c.hidden, "ran": c.ran, "passed": c.passed,
                 "points": c.points, "max": c.max_points}
                for c in self.checks
            ],
        }


@dataclass
class GradeReport:
    """A graded workspace: the per-exercise results, in course order."""

    directory: str
    results: list[ExerciseResult]
    complete: bool  # every exercise of the course was graded (no --only)
    graded: bool = True  # hidden checks ran (the instructor's secret); False: practice mode
    secret: str | None = None  # the secret's public fingerprint (graded mode)
    n_exercises: int = 0  # exercises in the course

    @property
    def total(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> int:
        return sum(r.max_points for r in self.results)

    @property
    def max_ran(self) -> int:
        """The points of the checks that ran (practice mode: the visible ones)."""
        return sum(c.max_points for r in self.results for c in r.checks if c.ran or not c.hidden)

    def counts(self) -> dict:
        checks = [c for r in self.results for c in r.checks]
        visible = [c for c in checks if not c.hidden]
        hidden = [c for c in checks if c.hidden]
        return {
            "visible": len(visible),
            "hidden": len(hidden),
            "hidden_ran": sum(c.ran for c in hidden),
            "visible_passed": sum(c.passed for c in visible),
            "hidden_passed": sum(c.passed for c in hidden),
        }

    @property
    def all_passed(self) -> bool:
        """True only when every check of every exercise ran and passed."""
        return self.complete and self.graded and all(c.passed for r in self.results for c in r.checks)

    @property
    def flags(self) -> list[str]:
        return [f"{r.exercise.id}: {f}" for r in self.results for f in r.flags]

    @property
    def missing(self) -> list[str]:
        """The exercise files this submission lacks (or that were not plain files)."""
        return [r.exercise.filename for r in self.results if r.missing]

    def sandboxes(self) -> list[str]:
        return sorted({r.sandbox for r in self.results if r.sandbox})

    def to_json(self) -> dict:
        n = self.counts()
        return {
            "mode": "graded" if self.graded else "practice",
            "total": self.total,
            "max": self.max_points,
            "exercises": [r.to_json() for r in self.results],
            "checks": n,
            "complete": self.complete,
            "all_passed": self.all_passed,
            "flags": self.flags,
            "missing": self.missing,
            "sandbox": self.sandboxes(),
            "secret": self.secret,
        }


# ----------------------------------------------------------------------- reports
def summary_line(report: GradeReport) -> str:
    n = report.counts()
    total_checks = n["visible"] + n["hidden"]
    passed = n["visible_passed"] + n["hidden_passed"]
    if report.all_passed:
        return (
            f"All {total_checks} checks passed ({n['visible']} visible, {n['hidden']} hidden): "
            f"{report.total}/{report.max_points} points."
        )
    if report.graded:
        counts = f"visible {n['visible_passed']}/{n['visible']}, hidden {n['hidden_passed']}/{n['hidden']}"
        line = f"{report.total}/{report.max_points} points; checks passed {passed}/{total_checks} ({counts})."
    else:
        hidden_points = report.max_points - report.max_ran
        if n["visible_passed"] == n["visible"] and report.complete:
            line = f"All {n['visible']} visible checks passed: {report.total}/{report.max_ran} points."
        else:
            line = (f"{report.total}/{report.max_ran} points from the visible checks; "
                    f"passed {n['visible_passed']}/{n['visible']}.")
        line += (f" Practice mode: the {n['hidden']} hidden checks ({hidden_points} more points) are run by your "
                 "instructor.")
    if not report.complete:
        left = report.n_exercises - len(report.results)
        line += f" Only {len(report.results)} of {report.n_exercises} exercises were graded ({left} not run)."
    return line


def sandbox_line(report: GradeReport) -> str:
    boxes = report.sandboxes()
    if not boxes:
        return ""
    if all(r.sealed for r in report.results if r.sandbox):
        return f"Your code ran in sealed child processes ({'; '.join(b.removeprefix('sealed; ') for b in boxes)})."
    return f"Your code ran in child processes that were NOT fully sealed on this machine: {'; '.join(boxes)}."


def table(report: GradeReport) -> list[str]:
    rows = [("exercise", "lesson", "visible", "hidden", "points")]
    for r in report.results:
        vis = [c for c in r.checks if not c.hidden]
        hid = [c for c in r.checks if c.hidden]
        hidden_cell = f"{sum(c.passed for c in hid)}/{len(hid)}" if any(c.ran for c in hid) or report.graded else "-"
        max_cell = r.max_points if report.graded else sum(c.max_points for c in vis)
        mark = " refused" if r.refused else (" flagged" if r.flags else "")
        rows.append(
            (
                r.exercise.id,
                r.exercise.lesson,
                f"{sum(c.passed for c in vis)}/{len(vis)}",
                hidden_cell,
                f"{r.points}/{max_cell}{mark}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(report: GradeReport, *, feedback: bool = True) -> str:
    """The table students read: exercise, checks passed, points; then the feedback."""
    lines = [f"Grading {report.directory}" + ("" if report.graded else " (practice: visible checks only)")]
    lines += table(report)
    lines.append("")
    lines.append(summary_line(report))
    if all(r.missing for r in report.results):
        lines.append(
            f"No exercise files were found in {report.directory}: is it the folder `tinytf exercises init` wrote?"
        )
    if sandbox_line(report):
        lines.append(sandbox_line(report))
    if feedback:
        for r in report.results:
            msgs = r.messages()
            if msgs:
                lines.append("")
                most = r.max_points if report.graded else sum(c.max_points for c in r.checks if not c.hidden)
                lines.append(f"{r.exercise.id} ({r.points}/{most}):")
                for m in msgs:
                    lines.append("  - " + m.replace("\n", "\n  "))
    return "\n".join(lines)


def format_feedback(name: str, report: GradeReport) -> str:
    """One student's feedback file: the table, then every check (passed or not, points, message)."""
    lines = [f"Feedback for {name}", ""] + table(report) + ["", summary_line(report)]
    if report.flags:
        lines += ["", "Flagged for the instructor:"] + [f"  - {f}" for f in report.flags]
    for r in report.results:
        lines += ["", f"{r.exercise.id}: {r.exercise.title} ({r.points}/{r.max_points} points)"]
        lines += [f"  note: {n}" for n in r.notes]
        for c in r.checks:
            mark = "pass" if c.passed else ("----" if not c.ran else "FAIL")
            line = f"  [{mark}] {c.points}/{c.max_points}  {c.name}"
            if not c.passed and c.ran:
                if c.hidden:
                    line += " — failed (hidden check: inputs and values are not shown)"
                elif c.refused_pass:
                    line += " — right value, but the exercise was refused"
                elif c.message:
                    line += "\n        " + c.message.replace("\n", "\n        ")
                for h in c.hints:
                    line += f"\n        likely mistake: {h}"
            elif not c.ran and c.message:
                line += f" — {c.message}"
            lines.append(line)
        printed = r.printed()
        if printed:
            lines.append("  printed:")
            lines += [f"    | {p}" for p in printed]
    return "\n".join(lines) + "\n"


def csv_cell(value: str) -> str:
    """Neutralise spreadsheet formulas in names and messages taken from submissions."""
    value = str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csv(reports: dict[str, GradeReport], exercises, path) -> None:
    """One row per submission: totals, flags, points per exercise, points per check, notes."""
    check_columns = [(e, i, c) for e in exercises for i, c in enumerate(e.checks)]
    with open(path, "x", newline="") as f:  # "x": never overwrite
        w = csv.writer(f)
        w.writerow(
            ["submission", "total", "max", "visible_points", "hidden_points", "visible_passed", "visible",
             "hidden_passed", "hidden", "flagged", "missing"]
            + [e.id for e in exercises]
            + [f"{e.id} | {'hidden' if c.hidden else 'visible'} {i + 1}: {c.name}" for e, i, c in check_columns]
            + ["flags", "notes"]
        )
        for name, rep in reports.items():
            n = rep.counts()
            by_id = {r.exercise.id: r for r in rep.results}
            notes = "; ".join(f"{r.exercise.id}: {note}" for r in rep.results for note in r.notes)
            vis_points = sum(c.points for r in rep.results for c in r.checks if not c.hidden)
            w.writerow(
                [csv_cell(name), rep.total, rep.max_points, vis_points, rep.total - vis_points,
                 n["visible_passed"], n["visible"], n["hidden_passed"], n["hidden"],
                 "yes" if rep.flags else "", csv_cell(" ".join(rep.missing))]
                + [by_id[e.id].points for e in exercises]
                + [by_id[e.id].checks[i].points for e, i, c in check_columns]
                + [csv_cell("; ".join(rep.flags)), csv_cell(notes)]
            )
