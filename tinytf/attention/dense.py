"""Scaled dot-product attention, the plain way: every logit of a (T, S) matrix at once.

Vaswani et al. 2017, "Attention Is All You Need":

    Attention(Q, K, V) = normalize(Q K^T * scale + bias, mask) V,   scale = 1/sqrt(H)

This file is the maths itself (`dense_attention`) and the input checks that every
attention path shares (`check_attention_inputs`). Layout (JAX's own, so
`jax.nn.dot_product_attention` is a drop-in oracle): query (B, T, N, H), key/value
(B, S, N, H), weights (B, N, T, S).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinytf.attention.masks import combine_masks, structured_mask
from tinytf.attention.normalizers import Normalizer, get_normalizer, softmax_with_sink

Array = jax.Array


def check_attention_inputs(query, key, value, mask=None, bias=None, sink=None) -> None:
    """Raise a ValueError naming the argument, its shape or dtype and what was expected."""
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have shape (B, T|S, N, H), got {name}.shape={x.shape}")
    B, T, N, H = query.shape
    if key.shape[0] != B or key.shape[2] != N or key.shape[3] != H:
        raise ValueError(
            f"key shape {key.shape} does not match query shape {query.shape}: "
            f"expected (B={B}, S, N={N}, H={H})")
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value shape {value.shape} does not match key shape {key.shape}: "
            f"expected the same (B, S, N) = {key.shape[:3]}")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if not jnp.issubdtype(query.dtype, jnp.floating):
        raise ValueError(f"query must be floating point, got dtype {query.dtype}")
    S = key.shape[1]
    target = (B, N, T, S)
    for name, x in (("mask", mask), ("bias", bias)):
        if x is None:
            continue
        if x.ndim > 4 or any(d not in (1, t) for d, t in zip(x.shape[::-1], target[::-1])):
            raise ValueError(f"{name} of shape {x.shape} is not broadcastable to (B, N, T, S) = {target}")
    if mask is not None and mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
    if sink is not None and jnp.shape(sink) not in ((), (N,)):
        raise ValueError(f"sink must be a scalar or have shape (N,)=({N},), got {jnp.shape(sink)}")


def sink_for_logits(sink) -> Array:
    """A sink logit, scalar or per head (N,), shaped to broadcast against (B, N, T, 1)."""
    sink = jnp.asarray(sink, jnp.float32)
    return sink[:, None, None] if sink.ndim == 1 else sink


def soft_cap(logits: Array, cap: float | None) -> Array:
    """Logit soft-capping (Gemma 2, Gemma Team 2024): cap * tanh(logits / cap); identity for None.

    Keeps every logit in (-cap, cap) while leaving small logits almost unchanged, so no
    head can push its softmax to a one-hot however large q.k grows.
    """
    return logits if cap is None else cap * jnp.tanh(logits / cap)


def dense_attention(query: Array, key: Array, value: Array, mask: Array | None = None, *,
                    bias: Array | None = None, scale: float, normalizer: str | Normalizer = "softmax",
                    sink=None, is_causal: bool = False, window: int | None = None,
                    logit_cap: float | None = None) -> tuple[Array, Array]:
    """The (T, S) logits, normalised, times the values. Arguments as `dot_product_attention`.

    Returns:
      out (B, T, N, H) in the dtype of query, weights (B, N, T, S) in float32.
    """
    B, T, N, H = query.shape
    S = key.shape[1]
    # Logits in float32 whatever the input dtype (bf16 softmax loses too much).
    logits = jnp.einsum("btnh,bsnh->bnts", query.astype(jnp.float32), key.astype(jnp.float32))  # (B, N, T, S)
    logits = soft_cap(logits * scale, logit_cap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    mask = combine_masks(mask, structured_mask(T, S - T, 0, S, is_causal, window))

    if sink is not None:
        weights = softmax_with_sink(logits, mask, sink_for_logits(sink))
    else:
        weights = get_normalizer(normalizer)(logits, mask)
    if weights.shape != logits.shape:
        raise ValueError(f"normalizer returned shape {weights.shape}, expected the logits' shape {logits.shape}")
    out = jnp.einsum("bnts,bsnh->btnh", weights, value.astype(jnp.float32))  # (B, T, N, H)
    return out.astype(query.dtype), weights


__all__ = ["check_attention_inputs", "sink_for_logits", "soft_cap", "dense_attention"]
