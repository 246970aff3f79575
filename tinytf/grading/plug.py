"""A student's finished exercises inside tinytf: `tinytf lesson attention-basics --use DIR`.

The way minitorch-style courses close the loop: the functions a student wrote for
the exercises drive a real lesson, and the lesson's claims (does the recall head
learn? does the query find its key?) say whether they hold up in training.

Pieces (each taken from the student when the file is there and the function runs on
a small probe input; otherwise tinytf's own, and the run says which):
  - attention: `scaled_dot_product_attention` from 02_attention.py, the whole
    computation (q, k, v -> out, weights);
  - softmax: `softmax` from 01_softmax.py as the normaliser of tinytf's
    `dot_product_attention`, used only when the attention is tinytf's (a student's
    attention computes its own weights).
Masks (03_masks.py) do not apply to attention-basics: its one head sees every token.

Lessons that accept --use: `USABLE_LESSONS` (attention-basics, whose recall head
calls `dot_product_attention` once per forward pass). Every other lesson builds its
attention inside `tinytf.nn` from a config and is refused with a message that says
so, rather than silently running tinytf's code.

numpy and jax.numpy: training differentiates through the student's code, so it must
be traceable by JAX. A file that does `import numpy as np` is loaded with `numpy`
bound to `jax.numpy` (array expressions carry over; in-place writes `x[i] = ...` do
not, and the probe call reports them).

Trust model. This runs the student's code in this process, unsandboxed, with the
permissions of whoever runs the command: it is for a student's own folder on the
student's own machine, exactly like running a script they wrote. Never point --use
at someone else's code; to check other people's work, use `tinytf grade`, which
runs it sealed in a child process.
"""

from __future__ import annotations

import builtins
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp

from tinytf.attention import dot_product_attention

USABLE_LESSONS = ("attention-basics",)


class UseError(ValueError):
    """--use cannot be honoured: a missing folder, or a lesson where the pieces do not apply."""


@dataclass
class StudentPieces:
    """The pieces for one run: callables plus one line per piece saying whose it is."""

    folder: Path
    attention: object = None
    """fn(q, k, v) -> (out (B,T,N,H), weights (B,N,T,S)) from the student, or None."""
    softmax: object = None
    """fn(x, mask=None, axis=-1) -> weights from the student, or None."""
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "pieces of this run:\n" + "\n".join(f"  {line}" for line in self.lines)


def _jax_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - __import__'s signature
    """__import__ with numpy (top-level only) answered by jax.numpy."""
    if name == "numpy" and level == 0:
        return jnp
    return builtins.__import__(name, globals, locals, fromlist, level)


def load_student_module(path: Path) -> types.ModuleType:
    """Execute a student's exercise file with `numpy` bound to `jax.numpy` (see the module docstring)."""
    module = types.ModuleType(f"tinytf_student_{path.stem}")
    module.__file__ = str(path)
    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": _jax_import}
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102 - the student's own code
    return module


def _probe(fn, name, call, filename):
    """The function if `call(fn)` runs and gives finite numbers, else (None, why)."""
    try:
        out = call(fn)
        leaves = jax.tree_util.tree_leaves(out)
        if not leaves or not all(bool(jnp.all(jnp.isfinite(jnp.asarray(x)))) for x in leaves):
            return None, f"{name} in {filename} returned no finite numbers on a probe input"
        return fn, ""
    except NotImplementedError:
        return None, f"{filename}: {name} is still the stub"
    except Exception as err:  # noqa: BLE001 - the student's code: any failure means "use tinytf's"
        return None, f"{filename}: {name} failed on a probe input ({type(err).__name__}: {str(err)[:200]})"


def load_pieces(folder) -> StudentPieces:
    """Load the student's softmax and attention from `folder` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UseError(f"--use {folder}: not a folder; expected your exercises folder (from `tinytf exercises init`)")
    pieces = StudentPieces(folder)
    # exercise code written for numpy asks for float64; JAX computes in float32 and would warn at every call
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64", category=UserWarning)
    key = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (2, 5, 1, 3)) for kk in key)
    found = {}
    for filename, name, call in (
        ("02_attention.py", "scaled_dot_product_attention", lambda f: f(q, k, v)),
        ("01_softmax.py", "softmax", lambda f: f(jnp.arange(7.0).reshape(1, 7), None, -1)),
    ):
        path = folder / filename
        if not path.is_file():
            found[name] = (None, f"{filename} not found in {folder}")
            continue
        try:
            fn = getattr(load_student_module(path), name, None)
        except Exception as err:  # noqa: BLE001
            found[name] = (None, f"{filename} does not load ({type(err).__name__}: {str(err)[:200]})")
            continue
        found[name] = (None, f"{filename} defines no {name}") if not callable(fn) else _probe(fn, name, call, filename)
    pieces.attention, why_attention = found["scaled_dot_product_attention"]
    pieces.softmax, why_softmax = found["softmax"]
    if pieces.attention is not None:
        pieces.lines.append("attention: YOURS (02_attention.py: scaled_dot_product_attention, its own weights)")
        pieces.lines.append("softmax:   inside your attention" + (
            "" if pieces.softmax is None else " (01_softmax.py is not called: your attention normalises itself)"))
    else:
        pieces.lines.append(f"attention: tinytf's dot_product_attention ({why_attention})")
        pieces.lines.append("softmax:   YOURS (01_softmax.py: softmax, as the normaliser)" if pieces.softmax is not None
                            else f"softmax:   tinytf's ({why_softmax})")
    pieces.lines.append("masks:     not used by this lesson (its head sees every token)")
    pieces.lines.append("everything else (embeddings, projections, training, measurements): tinytf")
    return pieces


def attention_from(pieces: StudentPieces):
    """A drop-in for `dot_product_attention(q, k, v, ...)` built from the student's pieces."""
    if pieces.attention is not None:
        def student_attention(query, key, value, mask=None, **options):
            if options.get("scale") is not None or options.get("bias") is not None:
                raise UseError("the lesson asked for a scale or bias your scaled_dot_product_attention does not take")
            out, weights = pieces.attention(query, key, value, mask)
            return jnp.asarray(out, query.dtype), jnp.asarray(weights, query.dtype)

        return student_attention
    if pieces.softmax is not None:
        def normalizer(logits, mask):
            return jnp.asarray(pieces.softmax(logits, mask, -1), logits.dtype)

        def with_student_softmax(query, key, value, mask=None, **options):
            return dot_product_attention(query, key, value, mask, normalizer=normalizer, chunk_size=None, **options)

        return with_student_softmax
    return dot_product_attention


def use_in_lesson(lesson_id: str, module, folder, *, log=print):
    """Make the loaded lesson `module` compute its attention with the student's pieces; returns its run().

    Only lessons in `USABLE_LESSONS`; the module is the lesson file loaded afresh for this
    run (`tinytf.apps.lessons.load_lesson`), so nothing outside it changes.
    """
    if lesson_id not in USABLE_LESSONS:
        raise UseError(
            f"lesson {lesson_id!r} does not take --use: only {', '.join(USABLE_LESSONS)} runs your exercise "
            "functions (its one attention head calls dot_product_attention directly); the other lessons build "
            "attention inside tinytf.nn from a config (try --variant there)")
    pieces = load_pieces(folder)
    if pieces.attention is None and pieces.softmax is None:
        raise UseError(f"--use {folder}: neither 02_attention.py nor 01_softmax.py has a working function yet "
                       f"({'; '.join(pieces.lines[:2])}); finish one and check it with `tinytf grade {folder}`")
    module.dot_product_attention = attention_from(pieces)
    log(pieces.summary())
    return module.run


__all__ = ["USABLE_LESSONS", "StudentPieces", "UseError", "attention_from", "load_pieces", "load_student_module",
           "use_in_lesson"]
