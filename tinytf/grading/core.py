"""What an exercise is, and how one check's verdict and feedback are computed.

An `Exercise` is a student file (``exercises/NN_slug.py``), a reference module
(``tinytf/grading/reference/exNN_slug.py``), a list of `Check`s and a list of
`Mutant`s. A check draws inputs from a random generator, calls one function of
the student's file (in the child process, see `sandbox`) and compares what came
back with the reference, here, in the grading process. A mutant is the reference
with one classic mistake patched in (no 1/sqrt(d), softmax over the wrong axis, ...):
when a student's output equals a mutant's output on a visible check, the feedback
names that mistake. The grader's own tests check that every mutant loses points.

Seeds: visible checks use a fixed seed per (exercise, check), so the feedback a
student reads is reproducible; hidden checks use a secret seed drawn for every
grading run, so their inputs can be neither known nor hard-coded.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinytf.grading.sandbox import CallResult

Inputs = dict  # keyword arguments: numpy arrays or JSON scalars
NOT_IMPLEMENTED = "not implemented yet"
NO_RESULT = "no result came back (the process ended or timed out before this call)"


@dataclass(frozen=True, kw_only=True)
class Check:
    """One call of a student's function and the rule that judges its result.

    Fields:
      name: what the check is about, shown to the student for visible checks.
      function: the student's function to call.
      inputs: rng -> keyword arguments (numpy arrays or JSON scalars).
      hidden: hidden checks use a secret seed and report only that they failed.
      points: points for passing (default 1 visible, 2 hidden).
      rtol, atol: tolerances of the default comparison (float32 students pass).
      raises: the call must raise this exception class (e.g. "ValueError").
      judge: custom verdict (inputs, expected outputs, got outputs) -> message or None.
      same: custom equality of two outputs, used to recognise mutants.
      outputs: names of the returned values, e.g. ("out", "weights").
    """

    name: str
    function: str
    inputs: Callable[[np.random.Generator], Inputs]
    hidden: bool = False
    points: int | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    raises: str | None = None
    judge: Callable[[Inputs, tuple, tuple], str | None] | None = None
    same: Callable[[tuple, tuple], bool] | None = None
    outputs: tuple[str, ...] = ()

    @property
    def max_points(self) -> int:
        return self.points if self.points is not None else (2 if self.hidden else 1)


@dataclass(frozen=True, kw_only=True)
class Mutant:
    """The reference with one classic mistake: text patches, plus optional appended source.

    Fields:
      id: short name, e.g. "no_scale".
      mistake: the hint a student gets when their output matches this mutant's.
      patch: (old, new) substitutions; each `old` must occur exactly once.
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
    """One exercise: a student file, its reference, checks and mutants.

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
    def max_points(self) -> int:
        return sum(c.max_points for c in self.checks)

    @property
    def reference(self):
        return importlib.import_module(f"tinytf.grading.reference.ex{self.number:02d}_{self.slug}")

    def reference_source(self) -> str:
        return inspect.getsource(self.reference)


# ----------------------------------------------------------------------- running trusted code
@functools.lru_cache(maxsize=None)
def program_namespace(exercise: Exercise, mutant_id: str | None) -> dict:
    """The reference module's namespace, or a mutant program's (both our own code)."""
    if mutant_id is None:
        return vars(exercise.reference)
    mutant = next(m for m in exercise.mutants if m.id == mutant_id)
    namespace = {"__name__": f"tinytf_mutant_{exercise.id}_{mutant_id}"}
    exec(compile(mutant.program(exercise.reference_source()), namespace["__name__"], "exec"), namespace)  # noqa: S102
    return namespace


def evaluate(exercise: Exercise, mutant_id: str | None, function: str, inputs: Inputs):
    """Call the reference (or a mutant) on copies of `inputs`; returns (outputs tuple, is_tuple)."""
    fn = program_namespace(exercise, mutant_id)[function]
    kwargs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(**kwargs)
    if isinstance(out, (tuple, list)):
        return tuple(np.asarray(o) for o in out), True
    return (np.asarray(out),), False


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


def judge_call(exercise: Exercise, check: Check, inputs: Inputs, got: CallResult | None) -> Verdict:
    """The verdict on one check, computed from the reference; feedback for visible checks."""
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
    try:
        expected, is_tuple = evaluate(exercise, None, check.function, inputs)
    except Exception as err:  # pragma: no cover - a broken reference is the grader's bug
        raise RuntimeError(f"reference {exercise.id}.{check.function} failed on check {check.name!r}: {err}") from err
    got_outputs = got.outputs  # a 1-tuple and a bare array are the same answer
    try:
        if check.judge is not None:
            message = check.judge(inputs, expected, got_outputs)
        else:
            message = default_judge(check, inputs, expected, got_outputs)
    except Exception as err:  # noqa: BLE001 - odd values must fail the check, not crash the grader
        message = f"the value returned could not be judged ({type(err).__name__}: {err})"
    if message is None:
        return Verdict(True)
    return Verdict(False, message)


def diagnose(
    exercise: Exercise, visible: list[tuple[int, Check, Inputs, tuple]], failing: set[int], limit: int = 2
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

    Returns:
      {check index: [mistake, ...]} for the failing checks some mutant explains.
    """
    agree: dict[str, set[int]] = {m.id: set() for m in exercise.mutants}
    explains: dict[int, list[Mutant]] = {}
    for i, check, inputs, got in visible:
        same = check.same or outputs_equal
        try:
            expected, _ = evaluate(exercise, None, check.function, inputs)
        except Exception:  # noqa: BLE001  pragma: no cover - a broken reference is caught by the tests
            continue
        for mutant in exercise.mutants:
            try:
                out, _ = evaluate(exercise, mutant.id, check.function, inputs)
            except Exception:  # noqa: BLE001 - a mutant may well crash on some inputs
                continue
            if same(out, got):
                agree[mutant.id].add(i)
                if i in failing and not same(out, expected):
                    explains.setdefault(i, []).append(mutant)
    hints = {}
    for i, mutants in explains.items():
        best = max(len(agree[m.id]) for m in mutants)
        mistakes = [m.mistake for m in mutants if len(agree[m.id]) == best]
        hints[i] = list(dict.fromkeys(mistakes))[:limit]
    return hints
