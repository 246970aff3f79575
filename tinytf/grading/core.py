"""What an exercise is, and how one check's verdict and feedback are computed.

An `Exercise` is a student file (``exercises/NN_slug.py``), a list of `Check`s and a
list of `Mutant`s (classic mistakes). A check calls one function of the student's
file (in the child process, see `sandbox`) and the grading process compares what
came back with the expected value. A mutant is the reference solution with one
classic mistake patched in (no 1/sqrt(d), softmax over the wrong axis, ...): when a
student's output equals a mutant's output on a visible check, the feedback names
that mistake.

Two sides know different things (see README, "For instructors"):
  - the instructor side (`instructor.py`): the reference solutions, the input
    generators of every check and the mutant programs; hidden inputs are drawn
    from the assignment secret;
  - the student side (`bundle.py`, shipped in the package): the public description
    of each exercise (its checks' names, points and tolerances, the mistakes'
    messages) and, for the visible checks only, their inputs, expected values and
    the mutants' outputs, precomputed from the instructor side.
Both reach the expected values through an oracle (`ReferenceOracle` here,
`bundle.BundleOracle`), so a verdict is the same whichever side computes it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinytf.grading.judges import JUDGES
from tinytf.grading.sandbox import CallResult

Inputs = dict  # keyword arguments: numpy arrays or JSON scalars
NOT_IMPLEMENTED = "not implemented yet"
NO_RESULT = "no result came back (the process ended or timed out before this call)"


@dataclass(frozen=True, kw_only=True)
class Check:
    """One call of a student's function and the rule that judges its result.

    Fields:
      name: what the check is about (shown to students for visible checks).
      function: the student's function to call.
      inputs: rng -> keyword arguments (numpy arrays or JSON scalars); instructor
        side only (None in the student-side catalogue).
      hidden: hidden checks draw their inputs from the assignment secret and
        report only whether they passed.
      points: points for passing (default 1 visible, 2 hidden).
      rtol, atol: tolerances of the default comparison (float32 students pass).
      raises: the call must raise this exception class (e.g. "ValueError"); such a
        check pays only when the same function is also right on valid input.
      judge: name of a custom verdict in `judges.JUDGES` (None: compare arrays).
      outputs: names of the returned values, e.g. ("out", "weights").
    """

    name: str
    function: str
    inputs: Callable[[np.random.Generator], Inputs] | None = None
    hidden: bool = False
    points: int | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    raises: str | None = None
    judge: str | None = None
    outputs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.judge is not None and self.judge not in JUDGES:
            raise ValueError(f"check {self.name!r}: unknown judge {self.judge!r}; expected one of {sorted(JUDGES)}")

    @property
    def max_points(self) -> int:
        return self.points if self.points is not None else (2 if self.hidden else 1)

    @property
    def same(self) -> Callable[[tuple, tuple], bool]:
        """Equality of two answers, used to recognise a mutant's output."""
        return (JUDGES[self.judge][1] if self.judge else None) or outputs_equal

    def public(self) -> dict:
        """The fields students may see (everything but the input generator)."""
        return {
            "name": self.name,
            "function": self.function,
            "hidden": self.hidden,
            "points": self.max_points,
            "rtol": self.rtol,
            "atol": self.atol,
            "raises": self.raises,
            "judge": self.judge,
            "outputs": list(self.outputs),
        }


@dataclass(frozen=True, kw_only=True)
class Mutant:
    """A classic mistake: the hint students get, and (instructor side) how to make it.

    Fields:
      id: short name, e.g. "no_scale".
      mistake: the hint a student gets when their output matches this mutant's.
      patch: (old, new) substitutions of the reference's source; each `old` must
        occur exactly once. Instructor side only (empty in the student-side catalogue).
      append: source added at the end (e.g. a rewritten function replacing one above).
    """

    id: str
    mistake: str
    patch: tuple[tuple[str, str], ...] = ()
    append: str = ""

    def program(self, reference_source: str) -> str:
        source = reference_source
        for old, new in self.patch:
            count = source.count(old)
            if count != 1:
                raise ValueError(
                    f"mutant {self.id!r}: patch text {old!r} occurs {count} times in the reference, "
                    "expected exactly once"
                )
            source = source.replace(old, new)
        return source + ("\n\n" + self.append if self.append else "")


@dataclass(frozen=True, kw_only=True)
class Exercise:
    """One exercise: a student file, its checks and its classic mistakes.

    Fields:
      number, slug: the file is ``{number:02d}_{slug}.py``.
      title: one line for `tinytf exercises list`.
      lesson: id of the lesson it belongs to (`tinytf lesson ID`).
      functions: the functions the student writes.
      checks, mutants: see `Check` and `Mutant`.
    """

    number: int
    slug: str
    title: str
    lesson: str
    functions: tuple[str, ...]
    checks: tuple[Check, ...]
    mutants: tuple[Mutant, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.number:02d}_{self.slug}"

    @property
    def filename(self) -> str:
        return f"{self.id}.py"

    @property
    def reference_name(self) -> str:
        """The reference solution's file name on the instructor side."""
        return f"ex{self.number:02d}_{self.slug}.py"

    @property
    def max_points(self) -> int:
        return sum(c.max_points for c in self.checks)

    @property
    def hidden_points(self) -> int:
        return sum(c.max_points for c in self.checks if c.hidden)

    @property
    def visible_points(self) -> int:
        return self.max_points - self.hidden_points


# ----------------------------------------------------------------------- expected values
def call_program(namespace: dict, function: str, inputs: Inputs):
    """Call trusted code (a reference or a mutant) on copies of `inputs`; returns (outputs, is_tuple)."""
    fn = namespace[function]
    kwargs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(**kwargs)
    if isinstance(out, (tuple, list)):
        return tuple(np.asarray(o) for o in out), True
    return (np.asarray(out),), False


class ReferenceOracle:
    """Expected values and mutant outputs from the reference programs (instructor side).

    `sources` maps an exercise id to its reference's source text; programs are
    compiled once and kept (`preload` compiles them all before any student code runs).
    """

    def __init__(self, sources: dict[str, str]):
        self.sources = dict(sources)

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one oracle per grading run, kept for its life
    def namespace(self, exercise: Exercise, mutant_id: str | None) -> dict:
        source = self.sources[exercise.id]
        if mutant_id is not None:
            mutant = next(m for m in exercise.mutants if m.id == mutant_id)
            source = mutant.program(source)
        name = f"tinytf_reference_{exercise.id}" + (f"_{mutant_id}" if mutant_id else "")
        namespace = {"__name__": name}
        exec(compile(source, name, "exec"), namespace)  # noqa: S102 - the instructor's own code
        return namespace

    def preload(self, exercise: Exercise) -> None:
        self.namespace(exercise, None)
        for m in exercise.mutants:
            self.namespace(exercise, m.id)

    def expected(self, exercise: Exercise, index: int, inputs: Inputs):
        check = exercise.checks[index]
        try:
            return call_program(self.namespace(exercise, None), check.function, inputs)
        except Exception as err:  # pragma: no cover - a broken reference is the grader's bug
            raise RuntimeError(
                f"reference {exercise.id}.{check.function} failed on check {check.name!r}: {err}"
            ) from err

    def mutant_outputs(self, exercise: Exercise, index: int, inputs: Inputs) -> dict[str, tuple | None]:
        """mutant id -> its outputs on these inputs (None where the mutant raised)."""
        check = exercise.checks[index]
        out = {}
        for m in exercise.mutants:
            try:
                out[m.id] = call_program(self.namespace(exercise, m.id), check.function, inputs)[0]
            except Exception:  # noqa: BLE001 - a mutant may well crash on some inputs
                out[m.id] = None
        return out


# ----------------------------------------------------------------------- describing arrays
def describe(value) -> str:
    """'(3, 5, 7) float32' for arrays, repr for scalars."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return f"{value.item()!r}"
        return f"{tuple(value.shape)} {value.dtype}"
    return repr(value)


def describe_inputs(inputs: Inputs) -> str:
    return ", ".join(f"{k}={describe(v)}" for k, v in inputs.items())


def _fmt(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    x = float(x)
    if np.isnan(x) or np.isinf(x):
        return str(x)
    return f"{x:.4g}"


def _index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


@dataclass
class Verdict:
    """The outcome of one check: passed, or a message saying why not."""

    passed: bool
    message: str = ""


def compare_arrays(name: str, expected: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> str | None:
    """None if `got` matches `expected`, else a message with shapes and the worst entry."""
    if got.shape != expected.shape:
        msg = f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if sorted(got.shape) == sorted(expected.shape):
            msg += " (the same sizes in another order: an axis is transposed or misplaced)"
        elif got.size == expected.size:
            msg += " (the same number of entries: a reshape went wrong or axes were dropped/added)"
        return msg
    if expected.dtype == bool and got.dtype != bool:
        return f"{name}: expected a boolean array, got dtype {got.dtype} (use comparisons, not 0/1 numbers)"
    if expected.dtype != bool and got.dtype == bool:
        kind = "floats" if expected.dtype.kind == "f" else "integers"
        return f"{name}: expected numbers ({kind}), got booleans"
    if expected.dtype == bool:
        wrong = np.argwhere(got != expected)
        if len(wrong):
            i = tuple(wrong[0])
            return (
                f"{name}: {len(wrong)} of {expected.size} entries differ; first at {_index(i)}: "
                f"expected {_fmt(expected[i])}, got {_fmt(got[i])}"
            )
        return None
    e, g = expected.astype(np.float64), got.astype(np.float64)
    bad = ~np.isfinite(g) & np.isfinite(e)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        return (
            f"{name}: got NaN/inf in {int(bad.sum())} of {e.size} entries, first at {_index(i)} "
            f"(expected {_fmt(e[i])}) — an overflow, a 0/0, or log(0)?"
        )
    close = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    diff = np.where(close, 0.0, np.abs(np.nan_to_num(g - e, nan=np.inf)))
    i = np.unravel_index(np.argmax(diff), diff.shape)
    where = f" at {_index(i)}" if e.ndim else ""
    return (
        f"{name}: {int((~close).sum())} of {e.size} entries differ (shape {tuple(e.shape)}); "
        f"largest error{where}: expected {_fmt(e[i])}, got {_fmt(g[i])}"
    )


def default_judge(check: Check, inputs: Inputs, expected: tuple, got: tuple) -> str | None:
    if len(got) != len(expected):
        names = check.outputs or tuple(f"output {i + 1}" for i in range(len(expected)))
        what = f"a tuple ({', '.join(names)})" if len(expected) > 1 else "one array"
        return f"expected {what}, got {len(got)} value(s)"
    names = check.outputs or (
        ("result",) if len(expected) == 1 else tuple(f"output {i + 1}" for i in range(len(expected)))
    )
    for name, e, g in zip(names, expected, got):
        msg = compare_arrays(name, e, g, check.rtol, check.atol)
        if msg:
            return msg
    return None


def outputs_equal(a: tuple, b: tuple) -> bool:
    """Exact-enough equality of two output tuples (NaN equals NaN), used to recognise mutants."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or (x.dtype == bool) != (y.dtype == bool):
            return False
        if not np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-3, atol=1e-5, equal_nan=True):
            return False
    return True


def judge_call(check: Check, inputs: Inputs, got: CallResult | None, expected: Callable[[], tuple]) -> Verdict:
    """The verdict on one check; `expected()` gives the expected outputs (called only when needed)."""
    if got is None:
        return Verdict(False, NO_RESULT)
    if got.error is not None:
        where = f" ({got.where})" if got.where else ""
        if check.raises and got.error == check.raises:
            return Verdict(True)
        if got.error == "BadResult":
            return Verdict(False, f"the value {check.function} returned could not be used: {got.message}")
        if got.error == "NotImplementedError":
            return Verdict(False, f"{NOT_IMPLEMENTED} (it raises NotImplementedError: {got.message})")
        msg = f"{check.function} raised {got.error}: {got.message}{where}"
        if got.error == "TypeError" and "unexpected keyword" in got.message:
            msg += " — keep the parameter names of the stub, the grader passes arguments by name"
        if check.raises:
            msg += f"; expected {check.raises}"
        return Verdict(False, msg)
    if check.raises:
        shapes = ", ".join(describe(o) for o in got.outputs)
        return Verdict(
            False, f"expected {check.function} to raise {check.raises} for these inputs, but it returned {shapes}"
        )
    expected_outputs = expected()
    try:
        if check.judge is not None:
            message = JUDGES[check.judge][0](inputs, expected_outputs, got.outputs)
        else:
            message = default_judge(check, inputs, expected_outputs, got.outputs)
    except Exception as err:  # noqa: BLE001 - odd values must fail the check, not crash the grader
        message = f"the value returned could not be judged ({type(err).__name__}: {err})"
    if message is None:
        return Verdict(True)
    return Verdict(False, message)


def diagnose(
    exercise: Exercise,
    visible: list[tuple[int, Check, Inputs, tuple]],
    failing: set[int],
    oracle,
    limit: int = 2,
) -> dict[int, list[str]]:
    """Name the classic mistakes behind failing visible checks.

    A mutant explains a failing check when its output there equals the student's
    (and differs from the reference). When several do, the ones that agree with the
    student on the most visible checks win, so a coincidence on one small input does
    not produce a misleading hint.

    Args:
      visible: (check index, check, inputs, student's outputs) for the visible checks
        that returned values.
      failing: indices of the failing checks to explain.
      oracle: gives `expected(exercise, index, inputs)` and `mutant_outputs(...)`.

    Returns:
      {check index: [mistake, ...]} for the failing checks some mutant explains.
    """
    agree: dict[str, set[int]] = {m.id: set() for m in exercise.mutants}
    explains: dict[int, list[Mutant]] = {}
    by_id = {m.id: m for m in exercise.mutants}
    for i, check, inputs, got in visible:
        expected, _ = oracle.expected(exercise, i, inputs)
        for mutant_id, out in oracle.mutant_outputs(exercise, i, inputs).items():
            if out is None or mutant_id not in by_id:
                continue
            if check.same(out, got):
                agree[mutant_id].add(i)
                if i in failing and not check.same(out, expected):
                    explains.setdefault(i, []).append(by_id[mutant_id])
    hints = {}
    for i, mutants in explains.items():
        best = max(len(agree[m.id]) for m in mutants)
        mistakes = [m.mistake for m in mutants if len(agree[m.id]) == best]
        hints[i] = list(dict.fromkeys(mistakes))[:limit]
    return hints
