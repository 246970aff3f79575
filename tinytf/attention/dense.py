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

from tinytf.attention.masks import combine_masks, length_mask, structured_mask
from tinytf.attention.normalizers import Normalizer, get_normalizer, softmax_with_sink

Array = jax.Array


def check_attention_inputs(query, key, value, mask=None, bias=None, sink=None, *, query_lengths=None,
                           key_lengths=None) -> None:
    """Raise a ValueError naming the argument, its shape or dtype and what was expected.

    Keys and values may have fewer heads than the queries (grouped-query attention): K
    heads with N % K == 0, query head n reading key/value head n // (N / K).
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"{name} must have shape (B, T|S, N, H), got {name}.shape={getattr(x, 'shape', x)}")
    B, T, N, H = query.shape
    S, K = key.shape[1], key.shape[2]
    if key.shape[0] != B or key.shape[3] != H or K < 1 or N % K:
        raise ValueError(
            f"key shape {key.shape} does not match query shape {query.shape}: expected (B={B}, S, K, H={H}) "
            f"with K key/value heads dividing N={N} (K = N for multi-head, 1 for multi-query attention)")
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value shape {value.shape} does not match key shape {key.shape}: "
            f"expected the same (B, S, K) = {key.shape[:3]}")
    if T < 1 or S < 1:
        raise ValueError(f"attention needs at least one query and one key, got T={T} (query {query.shape}) and "
                         f"S={S} (key {key.shape})")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    if not jnp.issubdtype(query.dtype, jnp.floating):
        raise ValueError(f"query must be floating point, got dtype {query.dtype}")
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
    for name, x in (("query_lengths", query_lengths), ("key_lengths", key_lengths)):
        if x is not None and (jnp.shape(x) != (B,) or not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer)):
            raise ValueError(f"{name} must be a (B,)=({B},) integer array of lengths, got shape {jnp.shape(x)}, "
                             f"dtype {jnp.asarray(x).dtype}")


def check_dropout(rate, key) -> float:
    """Attention dropout's rate in [0, 1) and, when it is > 0, a random key."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate must be a number in [0, 1), got {rate!r}")
    if rate > 0 and key is None:
        raise ValueError(f"dropout_rate={rate} needs dropout_key=jax.random.key(seed)")
    return float(rate)


def grouped_logits(query: Array, key: Array) -> Array:
    """q.k for every query head against its key/value head: (B, T, N, H) x (B, S, K, H) -> (B, N, T, S).

    With K < N (grouped-query attention, Ainslie et al. 2023; multi-query, Shazeer 2019)
    query head n = k * G + g (G = N / K) uses key head k, as in jax.nn. The heads are moved
    in front first: a batched (T, H) x (H, S) product per head is the layout XLA's CPU
    matmul runs fastest (measured: 1.5x faster than contracting the (T, N, H) layout).
    """
    B, T, N, H = query.shape
    K = key.shape[2]
    q = jnp.swapaxes(query, 1, 2)  # (B, N, T, H)
    k = jnp.swapaxes(key, 1, 2)  # (B, K, S, H)
    if K == N:
        return jnp.einsum("bnth,bnsh->bnts", q, k)  # (B, N, T, S)
    q = q.reshape(B, K, N // K, T, H)  # (B, K, G, T, H)
    return jnp.einsum("bkgth,bksh->bkgts", q, k).reshape(B, N, T, key.shape[1])  # (B, N, T, S)


def grouped_output(weights: Array, value: Array) -> Array:
    """weights (B, N, T, S) times values (B, S, K, H) with K | N -> (B, T, N, H)."""
    B, N, T, S = weights.shape
    K, H = value.shape[2], value.shape[3]
    v = jnp.swapaxes(value, 1, 2)  # (B, K, S, H)
    if K == N:
        return jnp.swapaxes(jnp.einsum("bnts,bnsh->bnth", weights, v), 1, 2)  # (B, T, N, H)
    w = weights.reshape(B, K, N // K, T, S)  # (B, K, G, T, S)
    return jnp.swapaxes(jnp.einsum("bkgts,bksh->bkgth", w, v).reshape(B, N, T, H), 1, 2)


def dropout_weights(weights: Array, rate: float, key) -> Array:
    """Inverted dropout on attention weights (Vaswani et al. 2017, section 5.4): keep w / (1 - p) with prob 1 - p."""
    if rate == 0.0:
        return weights
    keep = jax.random.bernoulli(key, 1.0 - rate, weights.shape)
    return jnp.where(keep, weights / (1.0 - rate), 0.0)


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
                    sink=None, is_causal: bool = False, window=None, q_offset: int | None = None,
                    query_lengths: Array | None = None, key_lengths: Array | None = None,
                    logit_cap: float | None = None, dropout_rate: float = 0.0,
                    dropout_key=None) -> tuple[Array, Array]:
    """The (T, S) logits, normalised, times the values. Arguments as `dot_product_attention`
    (q_offset: query 0's position among the keys, from the causal alignment).

    Returns:
      out (B, T, N, H) in the dtype of query, weights (B, N, T, S) in float32 (after dropout).
    """
    B, T, N, H = query.shape
    S = key.shape[1]
    q_offset = S - T if q_offset is None else q_offset
    # Logits in float32 whatever the input dtype (bf16 softmax loses too much).
    logits = grouped_logits(query.astype(jnp.float32), key.astype(jnp.float32))  # (B, N, T, S)
    logits = soft_cap(logits * scale, logit_cap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    mask = combine_masks(mask, structured_mask(T, q_offset, 0, S, is_causal, window),
                         length_mask(query_lengths, key_lengths, T, S))

    if sink is not None:
        weights = softmax_with_sink(logits, mask, sink_for_logits(sink))
    else:
        weights = get_normalizer(normalizer)(logits, mask)
    if weights.shape != logits.shape:
        raise ValueError(f"normalizer returned shape {weights.shape}, expected the logits' shape {logits.shape}")
    weights = dropout_weights(weights, dropout_rate, dropout_key)
    out = grouped_output(weights, value.astype(jnp.float32))  # (B, T, N, H)
    return out.astype(query.dtype), weights


__all__ = ["check_attention_inputs", "check_dropout", "grouped_logits", "grouped_output", "dropout_weights",
           "sink_for_logits", "soft_cap", "dense_attention"]
