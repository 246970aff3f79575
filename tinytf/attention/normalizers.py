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
    """
    x = logits.astype(jnp.float32)
    check_mask(mask)
    if mask is not None:
        x = jnp.where(mask, x, NEG)
    m = jnp.max(x, axis=-1, keepdims=True)  # (..., 1)
    if sink is not None:
        m = jnp.maximum(m, sink)
    m = jax.lax.stop_gradient(m)  # the max only keeps exp() in range; it cancels exactly
    e = jnp.exp(x - m)
    if mask is not None:
        e = jnp.where(mask, e, 0.0)  # fully masked rows: all zeros, not 1/S
    denom = jnp.sum(e, axis=-1, keepdims=True)
    if sink is not None:
        denom = denom + jnp.exp(sink - m)
    # Fully masked softmax rows have denom 0: divide by 1 instead (the row is 0 anyway).
    return e / jnp.where(denom > 0, denom, 1.0)


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
"""Normalizers with an online (streaming) form: the chunked path can compute them block by block."""


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """Look up a normalizer by name, or pass a callable `(logits, mask) -> weights` through."""
    if callable(normalizer):
        return normalizer
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
    return NORMALIZERS[normalizer]


__all__ = ["NEG", "Normalizer", "softmax", "softmax_with_sink", "softmax1", "ssmax", "sigmoid", "NORMALIZERS",
           "ONLINE_NORMALIZERS", "get_normalizer"]
