"""Normalizers: how one row of attention logits becomes weights.

Every normalizer is a function `(logits, mask) -> weights` over the last (key) axis,
computed in float32. A row whose keys are all masked gets zero weights (not 1/S, not
NaN): padding rows are common and must not poison training.

Reading order: `softmax` and its generalisation `softmax_with_sink` (an extra key with
a zero value), `softmax1`, `ssmax`, `sigmoid`, then the registry `NORMALIZERS`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Normalizer = Callable[[Array, Array | None], Array]

# A finite "minus infinity": exp(NEG - max) underflows to exactly 0, and unlike -inf
# it never produces inf - inf = NaN in the forward or backward pass.
NEG = -1e30


def softmax(logits: Array, mask: Array | None = None) -> Array:
    """Masked softmax over the last axis: exp(x_i) / sum_j exp(x_j), stably.

    Rows with no valid entry give all zeros. Computed in float32.
    """
    return softmax_with_sink(logits, mask, sink=None)


def softmax_with_sink(logits: Array, mask: Array | None, sink) -> Array:
    """Softmax with an optional extra zero-value key of logit `sink` (None, a scalar or (N, 1, 1)).

    Math: w_i = exp(x_i - m) / (exp(sink - m) + sum_j exp(x_j - m)), m = max(max_j x_j, sink).
    The weights of a row sum to less than one: the rest went to the sink.

    The backward pass is written out (a custom VJP, as `jax.nn.softmax` does): the softmax
    Jacobian applied to g is w * (g - sum_j g_j w_j), and the sink's gradient is
    -w_sink * sum_j g_j w_j. It needs only the weights, so training reads far less memory
    than differentiating through every step above; masked keys have w = 0 and get none.
    """
    check_mask(mask)
    if sink is None:
        return _masked_softmax(logits.astype(jnp.float32), mask)
    return _sink_softmax(logits.astype(jnp.float32), mask, jnp.asarray(sink, jnp.float32))


def _softmax_parts(x: Array, mask: Array | None, sink):
    """(weights, the sink's weight or None) in float32, computed stably."""
    if mask is not None:
        x = jnp.where(mask, x, NEG)  # masked logits: exp(NEG - m) underflows to exactly 0
    m = jnp.max(x, axis=-1, keepdims=True)  # (..., 1)
    if sink is not None:
        m = jnp.maximum(m, sink)
    e = jnp.exp(x - m)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    w_sink = None
    if sink is not None:
        e_sink = jnp.exp(sink - m)
        denom = denom + e_sink
        w_sink = e_sink / denom
    elif mask is not None:
        # A row with no visible key has m = NEG and e = 1 everywhere: divide by inf instead, so
        # that it is all zeros (not 1/S), without a second pass over the (T, S) weights.
        denom = jnp.where(m > 0.5 * NEG, denom, jnp.inf)
    return e / denom, w_sink


@jax.custom_vjp
def _masked_softmax(x: Array, mask: Array | None) -> Array:
    return _softmax_parts(x, mask, None)[0]


def _masked_softmax_fwd(x, mask):
    w = _softmax_parts(x, mask, None)[0]
    return w, (w, mask)


def _masked_softmax_bwd(saved, g):
    w, mask = saved
    return w * (g - jnp.sum(g * w, axis=-1, keepdims=True)), None


_masked_softmax.defvjp(_masked_softmax_fwd, _masked_softmax_bwd)


@jax.custom_vjp
def _sink_softmax(x: Array, mask: Array | None, sink: Array) -> Array:
    return _softmax_parts(x, mask, sink)[0]


def _sink_softmax_fwd(x, mask, sink):
    w, w_sink = _softmax_parts(x, mask, sink)
    return w, (w, w_sink, mask, sink)


def _sink_softmax_bwd(saved, g):
    w, w_sink, mask, sink = saved
    gw = jnp.sum(g * w, axis=-1, keepdims=True)  # (..., 1)
    dsink = _sum_to(-w_sink * gw, jnp.shape(sink))  # the sink's logit moves mass in or out of every row
    return w * (g - gw), None, dsink


def _sum_to(x: Array, shape: tuple) -> Array:
    """Sum x down to `shape` (the inverse of broadcasting `shape` up to x.shape)."""
    lead = x.ndim - len(shape)
    x = jnp.sum(x, axis=tuple(range(lead))) if lead > 0 else x
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
    return (jnp.sum(x, axis=axes, keepdims=True) if axes else x).reshape(shape)


_sink_softmax.defvjp(_sink_softmax_fwd, _sink_softmax_bwd)


def softmax1(logits: Array, mask: Array | None = None) -> Array:
    """Off-by-one softmax (Miller 2023, "Attention is off by one"): exp(x_i) / (1 + sum_j exp(x_j)).

    Equivalent to an extra key with logit 0 and value 0, so a head can attend to
    "nothing": the weights of a row sum to less than one.
    """
    return softmax_with_sink(logits, mask, sink=0.0)


def check_mask(mask) -> None:
    """A mask is boolean (True = may attend): 0/1 floats would silently mean something else."""
    if mask is not None and jnp.asarray(mask).dtype != jnp.bool_:
        raise ValueError(f"mask must be boolean (True = may attend), got dtype {jnp.asarray(mask).dtype}")


def _visible_keys(logits: Array, mask: Array | None) -> Array:
    """Number of keys each query may see, broadcastable to logits[..., :1]."""
    check_mask(mask)
    S = logits.shape[-1]
    if mask is None:
        return jnp.full((1,) * (logits.ndim - 1) + (1,), float(S))
    mask = jnp.broadcast_to(mask, mask.shape[:-1] + (S,))
    return jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.float32)


def ssmax(logits: Array, mask: Array | None = None) -> Array:
    """Scalable softmax (Nakanishi 2025, "Scalable-Softmax Is Superior for Attention").

    Math: softmax(s * log(n) * x) where n is the number of keys the query may see.
    As n grows, plain softmax flattens ("attention fading"); multiplying by log n keeps
    the gap between the largest logit and the rest growing with n. Here s = 1; a
    layer learns s per head by scaling its queries (see `tinytf.nn`).
    """
    n = _visible_keys(logits, mask)
    return softmax(logits.astype(jnp.float32) * jnp.log(jnp.maximum(n, 1.0)), mask)


def sigmoid(logits: Array, mask: Array | None = None) -> Array:
    """Sigmoid attention without normalisation (Gu et al. 2024; Ramapuram et al. 2024).

    Math: w_ij = sigmoid(x_ij - log n), n = number of visible keys. Each weight is
    independent, so no key has to absorb leftover mass: Gu et al. find it prevents
    attention sinks. The -log n bias keeps the row sum near 1 at initialisation.
    """
    n = _visible_keys(logits, mask)
    w = jax.nn.sigmoid(logits.astype(jnp.float32) - jnp.log(jnp.maximum(n, 1.0)))
    return w if mask is None else jnp.where(mask, w, 0.0)


NORMALIZERS: dict[str, Normalizer] = {
    "softmax": softmax,
    "softmax1": softmax1,
    "ssmax": ssmax,
    "sigmoid": sigmoid,
}

ONLINE_NORMALIZERS = ("softmax", "softmax1", "ssmax")
"""Normalizers with an online (streaming) form: the flash path can compute them tile by tile."""


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """Look up a normalizer by name, or pass a callable `(logits, mask) -> weights` through."""
    if callable(normalizer):
        return normalizer
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
    return NORMALIZERS[normalizer]


__all__ = ["NEG", "Normalizer", "softmax", "softmax_with_sink", "softmax1", "ssmax", "sigmoid", "NORMALIZERS",
           "ONLINE_NORMALIZERS", "get_normalizer"]
