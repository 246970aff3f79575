"""The variant contract: what an attention function must do before tinytf trains with it.

A variant is `fn(q, k, v, mask, bias) -> (out, weights)` (or an `AttentionConfig`, maybe
with a normalizer `(logits, mask) -> weights`). A broken one used to fail late: after
minutes of training, as a raw jit traceback, or not at all (weights of the wrong layout,
a mask that lets queries see the future). `check_variant` runs the function on tiny
inputs in a few seconds and raises one `VariantError` naming the first broken promise
and how to fix it:

  1. signature   it can be called as fn(q, k, v, mask, bias);
  2. output      it returns a pair: out (B, T, N, H) float like q, weights (B, N, T, S) or None;
  3. layout      weights in the (B, N, T, S) layout every diagnostic reads (a transposed
                 array is refused, with the transpose that fixes it);
  4. masks       it accepts every mask and bias shape the layers pass (None, (1, 1, T, S),
                 (B, 1, 1, S); bias (B, N, T, S));
  5. jit         it compiles under `jax.jit` (no numpy or Python `if` on array values);
  6. gradients   d out / d (q, k, v) is finite;
  7. empty rows  a query row whose keys are all masked gives a finite output and gradients;
  8. causality   under a causal mask, changing later tokens leaves earlier outputs (and the
                 weights on masked keys) untouched: a variant that leaks the future is refused;
  9. layer       a `MultiHeadAttention` built with it runs, differentiates and stays causal.

Sizes are distinct (B=2, N=3, T=5, S=7, H=8) so that a swapped axis cannot pass. The
command line calls `load_variant` (resolve, then check; once per variant source) before
anything trains; `variant_fingerprint` says which source a variant comes from, so that
results cached for it are never reused after its file changes.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from dataclasses import dataclass, fields
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf.nn import MultiHeadAttention
from tinytf.variants import BUILTIN_VARIANTS, VARIANTS, AttentionConfig, get_variant

B, N, T, S, H = 2, 3, 5, 7, 8  # distinct sizes: a transposed axis cannot pass
LETTERS = {B: "B", N: "N", T: "T", S: "S", H: "H"}
CAUSAL_FROM = 4  # the causal probe changes tokens 4.. of a 7-token sequence
HOW_TO_MASK = ("apply the mask before normalising, e.g. logits = jnp.where(mask, logits, -1e30), and give masked "
               "keys zero weight (mask is boolean, True = may attend, broadcastable to (B, N, T, S); None = no mask)")


class VariantError(ValueError):
    """A variant that breaks the contract; the message names the check, what was seen and the fix."""


@dataclass(frozen=True)
class ContractReport:
    """What `check_variant` found: the checks passed, notes (harmless departures) and the time it took."""

    spec: str
    config: AttentionConfig
    passed: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float


# ---------------------------------------------------------------------------- helpers
def _layout(shape) -> str:
    """(2, 5, 3, 7) -> "(B, T, N, S)" when every size is one of the probe's distinct sizes."""
    return "(" + ", ".join(LETTERS.get(d, str(d)) for d in shape) + ")"


def _normal(seed: int, shape) -> np.ndarray:
    """Probe inputs from numpy: no device op (each eager op would compile a program of its own)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _inputs(seed: int, t: int = T, s: int = S):
    """q (B, t, N, H), k and v (B, s, N, H), float32 numpy."""
    return _normal(seed, (B, t, N, H)), _normal(seed + 100, (B, s, N, H)), _normal(seed + 200, (B, s, N, H))


def _causal(t: int, s: int) -> np.ndarray:
    """(1, 1, t, s) bottom-right causal mask, the shape a causal layer passes."""
    return (np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t))[None, None]


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class _Checker:
    """Runs the checks in order; `fail` raises the one error a user sees."""

    def __init__(self, spec: str):
        self.spec, self.passed, self.notes = spec, [], []

    def fail(self, check: str, message: str):
        raise VariantError(f"variant {self.spec!r} breaks the contract [{check}]: {message}")

    def ok(self, check: str):
        self.passed.append(check)


# ------------------------------------------------------------------- the function checks
JIT_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
              jax.errors.TracerArrayConversionError, jax.errors.TracerIntegerConversionError)


def _check_structure(c: _Checker, result, q, *, where: str, t: int = T, s: int = S) -> None:
    """At trace time: out (B, t, N, H) in q's dtype; weights (B, N, t, s) or None."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = (f"a {type(result).__name__} of length {len(result)}" if isinstance(result, (tuple, list)) else
               f"an array of shape {tuple(result.shape)}" if hasattr(result, "shape") else f"a {type(result).__name__}")
        c.fail("output", f"{where} returned {got}: expected a pair (out, weights); return (out, None) if you do not "
                         "form the (B, N, T, S) weights")
    out, weights = result
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        c.fail("output", f"{where} returned out of type {type(out).__name__}: expected an array (B, T, N, H)")
    expected = (B, t, N, H)
    if tuple(out.shape) != expected:
        hint = ""
        if sorted(out.shape) == sorted(expected) and len(set(expected)) == 4:
            perm = tuple(tuple(out.shape).index(d) for d in expected)
            hint = f"; it looks like {_layout(out.shape)}: jnp.transpose(out, {perm}) gives (B, T, N, H)"
        c.fail("output", f"{where} returned out of shape {tuple(out.shape)}: expected (B, T, N, H) = {expected}, "
                         f"the query's shape{hint}")
    if out.dtype != q.dtype and q.dtype == jnp.float32:
        c.fail("output", f"{where} returned out of dtype {out.dtype} for {q.dtype} inputs: return out.astype(q.dtype)")
    if weights is None:
        return
    expected_w, shape = (B, N, t, s), tuple(getattr(weights, "shape", ()))
    if shape == expected_w:
        return
    if sorted(shape) == sorted(expected_w) and len(set(expected_w)) == 4:
        perm = tuple(shape.index(d) for d in expected_w)
        c.fail("weights layout", f"{where} returned weights of shape {shape}, layout {_layout(shape)}: expected "
                                 f"(B, N, T, S) = {expected_w}, the layout every diagnostic and plot reads; return "
                                 f"jnp.transpose(weights, {perm})")
    c.fail("weights layout", f"{where} returned weights of shape {shape}: expected (B, N, T, S) = {expected_w} "
                             "(batch, heads, queries, keys), or None")


def _finite(c: _Checker, x, check: str, what: str, hint: str = "") -> None:
    if x is not None:
        bad = int(np.sum(~np.isfinite(np.asarray(x, np.float32))))
        if bad:
            c.fail(check, f"{what} has {bad} NaN/inf entries of {x.size} on finite inputs{hint}")


def _check_function(c: _Checker, fn) -> None:
    """Every function check, traced into one compiled program (one compile, about a second)."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(None, None, None, None, None)
        except TypeError as err:
            c.fail("signature", f"{name}{signature} cannot be called as fn(q, k, v, mask, bias) ({err}): tinytf "
                                f"passes five arguments; write def {name}(q, k, v, mask, bias) (mask and bias may "
                                "be None)")
    c.ok("signature")
    bf16_note = []

    def call(check: str, where: str, *args, t: int = T, s: int = S):
        try:
            result = fn(*args)
        except VariantError:
            raise
        except JIT_ERRORS as err:
            c.fail("jit", f"{where} cannot be compiled with jax.jit ({_first_line(err)}). Under jit the arrays are "
                          "tracers: use jax.numpy, not numpy, on them; jnp.where instead of a Python if on array "
                          "values; no float(), int() or .item()")
        except Exception as err:  # the user's own bug: say where it happened and with which shapes
            shapes = ", ".join(f"{n} {None if a is None else tuple(a.shape)}" for n, a in zip("qkv", args[:3]))
            c.fail(check, f"{where} raised {_first_line(err)}, called with {shapes}, mask "
                          f"{None if args[3] is None else tuple(args[3].shape)}, bias "
                          f"{None if args[4] is None else tuple(args[4].shape)} (q is (B, T, N, H), k and v "
                          "(B, S, N, H), mask bool broadcastable to (B, N, T, S))")
        _check_structure(c, result, args[0], where=where, t=t, s=s)
        return result

    padding = np.arange(S)[None, None, None, :] < np.array([S, S - 2])[:, None, None, None]  # (B, 1, 1, S)
    causal = _causal(T, S)
    empty_row = causal & ~((np.arange(B)[:, None, None, None] == 0) & (np.arange(T)[None, None, :, None] == 2))
    late = (np.arange(S) >= CAUSAL_FROM)[None, :, None, None]  # (1, S, 1, 1): the probe's changed tokens
    masks = (causal, padding, empty_row, _causal(S, S))

    def probe(q, k, v, bias, cotangent, q7, k7, v7, noise):
        causal, padding, empty_row, mask7 = (jnp.asarray(m) for m in masks)  # jax arrays, as the layers pass
        out = {"plain": call("output", f"{name}(q, k, v, None, None)", q, k, v, None, None)}
        for key, mask, b, what in (("causal", causal, None, "a causal mask (1, 1, T, S)"),
                                   ("padding", padding, None, "a padding mask (B, 1, 1, S)"),
                                   ("bias", None, bias, "a bias (B, N, T, S)"),
                                   ("empty", empty_row, None, "query 2 of example 0 fully masked")):
            out[key] = call("masks", f"{name} with {what}", q, k, v, mask, b)

        def loss(q, k, v, mask):
            return jnp.sum(fn(q, k, v, mask, None)[0].astype(jnp.float32) * cotangent)

        out["grads"] = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, causal)
        out["empty grads"] = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, empty_row)
        out["causal a"] = call("causality", f"{name} on 7 tokens", q7, k7, v7, mask7, None, t=S)
        changed = [jnp.where(late, x + 3.0 * n, x) for x, n in zip((q7, k7, v7), noise)]
        out["causal b"] = call("causality", f"{name} on 7 tokens", *changed, mask7, None, t=S)
        try:  # bfloat16 is optional: a note, not an error
            out["bf16"] = fn(*(x.astype(jnp.bfloat16) for x in (q, k, v)), causal, None)[0]
        except Exception as err:
            bf16_note.append(f"bfloat16 inputs fail ({_first_line(err)})")
        return out

    q, k, v = _inputs(0)
    q7, k7, v7 = _inputs(1, t=S, s=S)
    bias, cotangent = 0.1 * _normal(5, (B, N, T, S)), _normal(6, (B, T, N, H))
    try:
        r = jax.jit(probe)(q, k, v, bias, cotangent, q7, k7, v7, _inputs(2, t=S, s=S))
    except VariantError:
        raise
    except JIT_ERRORS as err:
        c.fail("jit", f"{name} cannot be compiled with jax.jit ({_first_line(err)})")
    except Exception as err:
        c.fail("gradients", f"jax.grad of {name} raised {_first_line(err)}: the output must be differentiable "
                            "with respect to q, k and v")
    for key in ("plain", "causal", "padding", "bias"):
        _finite(c, r[key][0], "output", f"the output of {name} ({key})", " (|q.k| is about 10 here)")
        _finite(c, r[key][1], "output", f"the weights of {name} ({key})")
    c.ok("output")
    c.ok("weights layout")
    c.ok("jit")
    c.ok("masks")
    for arg, g in zip("qkv", r["grads"]):
        _finite(c, g, "gradients", f"d out/d {arg} under a causal mask",
                ". Typical causes: sqrt or log at 0, a division by a sum that can be 0, or jnp.where whose unused "
                "branch is inf/NaN (its gradient still flows: compute that branch on safe values)")
    if not float(np.abs(np.asarray(r["grads"][2])).sum()) > 0:
        c.notes.append("the output does not depend on the values v (zero gradient): is v used?")
    c.ok("gradients")
    empty_hint = (" when a query row has no visible key (a padding query). Keep it finite: mask with a finite "
                  "-1e30 instead of -inf and divide by a sum clamped away from 0 (jax.nn.softmax of an all -inf "
                  "row is NaN)")
    _finite(c, r["empty"][0], "empty rows", f"the output of {name}", empty_hint)
    _finite(c, r["empty"][1], "empty rows", f"the weights of {name}", empty_hint)
    for arg, g in zip("qkv", r["empty grads"]):
        _finite(c, g, "empty rows", f"d out/d {arg}", empty_hint)
    weights = r["empty"][1]
    if weights is not None and float(np.abs(np.asarray(weights)[0, :, 2]).max()) > 1e-6:
        c.notes.append("a fully masked query row gets non-zero weights (it reads masked keys); tinytf's normalizers "
                       "give such rows zero weights and a zero output")
    c.ok("empty rows")

    (out_a, w_a), (out_b, _) = r["causal a"], r["causal b"]
    out_a, out_b = np.asarray(out_a, np.float32), np.asarray(out_b, np.float32)
    diff = np.abs(out_a - out_b)[:, :CAUSAL_FROM].max(axis=(0, 2, 3))  # (CAUSAL_FROM,) per early position
    tolerance = 1e-4 * (float(np.abs(out_a).max()) + 1e-6)
    if float(diff.max()) > tolerance:
        leaked = [int(i) for i in np.nonzero(diff > tolerance)[0]]
        c.fail("causality", f"under a causal mask (1, 1, {S}, {S}), changing only tokens {CAUSAL_FROM}..{S - 1} "
                            f"changed the output at earlier position(s) {leaked} (largest change "
                            f"{float(diff.max()):.3g}): the variant lets queries see the future. Fix: {HOW_TO_MASK}")
    if w_a is not None:
        leak = float(np.abs(np.where(_causal(S, S), 0.0, np.asarray(w_a))).max())
        if leak > 1e-6:
            c.fail("causality", f"the returned weights put up to {leak:.3g} on masked (future) keys although the "
                                "output ignores them: return the weights the output is computed from, with zeros "
                                "on masked keys")
    c.ok("causality")
    c.notes.extend(bf16_note)
    if "bf16" in r and r["bf16"].dtype != jnp.bfloat16:
        c.notes.append(f"bfloat16 inputs give a {r['bf16'].dtype} output; return out.astype(q.dtype) so that "
                       "bfloat16 models stay in bfloat16")


def _check_normalizer(c: _Checker, normalizer) -> None:
    """A normalizer (logits, mask) -> weights keeps the logits' shape and gives masked keys zero weight."""
    name = getattr(normalizer, "__name__", type(normalizer).__name__)
    logits, causal = 3.0 * _normal(7, (B, N, T, S)), _causal(T, S)
    where = f"normalizer {name}(logits (B, N, T, S) = {logits.shape}, mask)"
    try:
        plain, masked = jax.jit(lambda x: (normalizer(x, None), normalizer(x, causal)))(logits)
    except Exception as err:
        c.fail("normalizer", f"{where} raised {_first_line(err)}: a normalizer is (logits, mask) -> weights over "
                             "the last axis, compiled under jax.jit; mask is None or bool, True = may attend")
    for weights in (plain, masked):
        if tuple(getattr(weights, "shape", ())) != logits.shape:
            c.fail("normalizer", f"{where} returned shape {tuple(getattr(weights, 'shape', ()))}: expected the "
                                 f"logits' shape {logits.shape}")
        _finite(c, weights, "normalizer", f"the weights of {where}")
    if float(np.abs(np.where(causal, 0.0, np.asarray(masked))).max()) > 1e-6:
        c.fail("causality", f"{where} gives masked keys non-zero weight, so queries see the future. Fix: "
                            f"{HOW_TO_MASK}")
    c.ok("normalizer")


# ---------------------------------------------------------------------- the layer check
def _check_layer(c: _Checker, config: AttentionConfig) -> None:
    """A MultiHeadAttention built with the config: forward, gradients, causality, under jit."""
    D = N * H
    late = (np.arange(S) >= CAUSAL_FROM)[None, :, None]  # (1, S, 1)

    @jax.jit
    def probe(x, noise):  # the layer is built inside the program: its random init compiles with it
        try:
            layer = MultiHeadAttention(D, N, config=config, rngs=nnx.Rngs(0))
        except Exception as err:
            c.fail("layer", f"MultiHeadAttention(d_model={D}, num_heads={N}, config=...) raised {_first_line(err)}")
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def forward(params, x):
            return nnx.merge(graphdef, params, rest)(x, is_causal=True)

        grads = jax.grad(lambda p: jnp.sum(forward(p, x) ** 2))(params)
        return forward(params, x), grads, forward(params, jnp.where(late, x + 3.0 * noise, x))

    x = _normal(8, (B, S, D))
    try:
        y, grads, y2 = probe(x, _normal(9, x.shape))
    except VariantError:
        raise
    except Exception as err:
        c.fail("layer", f"a causal MultiHeadAttention(d_model={D}, num_heads={N}) with this variant raised "
                        f"{_first_line(err)} on x of shape {x.shape}")
    y, y2 = np.asarray(y), np.asarray(y2)
    if y.shape != x.shape or not np.isfinite(y).all():
        c.fail("layer", f"a MultiHeadAttention with this variant returned shape {y.shape} (expected {x.shape}) "
                        "or non-finite values")
    if not all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)):
        c.fail("gradients", "the parameters of a MultiHeadAttention with this variant get NaN/inf gradients")
    diff = float(np.abs(y - y2)[:, :CAUSAL_FROM].max())
    if diff > 1e-4 * (float(np.abs(y).max()) + 1e-6):
        c.fail("causality", f"in a causal MultiHeadAttention, changing tokens {CAUSAL_FROM}.. changed earlier outputs "
                            f"(largest change {diff:.3g}): the variant lets queries see the future. Fix: {HOW_TO_MASK}")
    c.ok("layer")


# ------------------------------------------------------------------------- public API
def check_variant(spec) -> ContractReport:
    """Check a variant against the contract in a few seconds; raise `VariantError` on the first broken promise.

    Args:
      spec: a variant name, "module:fn", "path/to/file.py:fn", a function
        fn(q, k, v, mask, bias) -> (out, weights), or an AttentionConfig.

    Returns:
      A `ContractReport` (checks passed, notes on harmless departures, seconds).

    Raises:
      VariantError (a ValueError): the variant cannot be loaded or breaks a check; the
      message names the check, what was seen and how to fix it.
    """
    t0 = time.perf_counter()
    label = spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
    c = _Checker(label)
    try:
        config = get_variant(spec)
    except VariantError:
        raise
    except (ValueError, TypeError) as err:
        raise VariantError(str(err)) from err
    c.ok("load")
    if config.fn is not None:
        _check_function(c, config.fn)
    if callable(config.normalizer):
        _check_normalizer(c, config.normalizer)
    _check_layer(c, config)
    return ContractReport(spec=label, config=config, passed=tuple(c.passed), notes=tuple(c.notes),
                          seconds=time.perf_counter() - t0)


_CHECKED: dict[tuple[str, str], ContractReport] = {}


def load_variant(spec) -> ContractReport:
    """Resolve a variant and check it once per (spec, source); tinytf's own named variants are trusted.

    The command line calls this before anything trains. A variant whose source file
    changed is checked again.
    """
    if isinstance(spec, str) and spec in BUILTIN_VARIANTS and VARIANTS.get(spec) is not None:
        return ContractReport(spec=spec, config=VARIANTS[spec], passed=("builtin",), notes=(), seconds=0.0)
    key = (spec if isinstance(spec, str) else repr(spec), variant_fingerprint(spec))
    if key not in _CHECKED:
        _CHECKED[key] = check_variant(spec)
    return _CHECKED[key]


# -------------------------------------------------------------------------- provenance
def _callable_identity(f) -> str:
    """A callable's qualified name and a hash of the file that defines it ('<no source>' if none)."""
    if isinstance(f, functools.partial):
        return f"partial({_callable_identity(f.func)}, {f.args!r}, {sorted(f.keywords.items())!r})"
    name = f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}"
    try:
        source = Path(inspect.getsourcefile(f)).read_bytes()
    except (TypeError, OSError):
        return f"{name}@<no source>"
    return f"{name}@{hashlib.sha256(source).hexdigest()[:16]}"


def variant_fingerprint(spec) -> str:
    """A hash of what defines a variant: its config and the source files of its functions.

    Two specs with the same fingerprint compute the same thing (as far as their files
    say); editing the file that defines a variant's function changes it. A variant that
    imports other files of yours is identified by its own file only.
    """
    config = get_variant(spec)
    parts = [f"{f.name}={_callable_identity(v) if callable(v) else repr(v)}"
             for f in fields(config) for v in [getattr(config, f.name)]]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


__all__ = ["VariantError", "ContractReport", "check_variant", "load_variant", "variant_fingerprint"]
