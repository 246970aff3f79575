"""Memory-efficient attention: the same maths, one block of keys at a time (online softmax).

Rabe & Staats 2021 ("Self-attention Does Not Need O(n^2) Memory") and the
FlashAttention recurrence (Dao et al. 2022). Keys are processed in blocks of
C = chunk_size with `lax.scan`; for each query we carry the running max m, the
running denominator l and the running numerator acc:

    m' = max(m, max_j x_j);  l' = l e^{m-m'} + sum_j e^{x_j-m'};
    acc' = acc e^{m-m'} + sum_j e^{x_j-m'} v_j;          out = acc / l

Only (B, N, T, C) logits exist at a time, so memory is linear in S; the scan body is
wrapped in `jax.checkpoint`, so the backward pass recomputes each block instead of
storing it and stays linear too.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tinytf.attention.dense import (check_attention_inputs, check_dropout, dropout_weights, grouped_logits,
                                   grouped_output, sink_for_logits, soft_cap)
from tinytf.attention.masks import (broadcast_keys, combine_masks, lengths_block_mask, query_offset,
                                    structured_mask, visible_key_count)
from tinytf.checks import check_int
from tinytf.attention.normalizers import NEG, ONLINE_NORMALIZERS

Array = jax.Array


def chunked_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None = None,
    *,
    bias: Array | None = None,
    scale: float | None = None,
    normalizer: str = "softmax",
    sink: Array | float | None = None,
    is_causal: bool = False,
    window=None,
    causal_alignment: str = "bottom_right",
    query_lengths: Array | None = None,
    key_lengths: Array | None = None,
    logit_cap: float | None = None,
    dropout_rate: float = 0.0,
    dropout_key=None,
    chunk_size: int = 512,
) -> Array:
    """Attention over key blocks of `chunk_size` with the online softmax; the weights are never formed.

    Supports the normalizers "softmax", "softmax1" and "ssmax", a per-head `sink`,
    soft-capped logits, grouped-query heads, masks and biases broadcastable to
    (B, N, T, S) (sliced per block), and the structured `is_causal` / `window` /
    length masks, which are built per block and never materialised. Dropout draws its
    mask per key block from fold_in(dropout_key, block): same key, same mask on this
    path (not the same mask as the dense path). Arguments as `dot_product_attention`.

    Returns:
      out (B, T, N, H) in the dtype of query.
    """
    if normalizer not in ONLINE_NORMALIZERS:
        raise ValueError(
            f"chunked attention supports normalizer 'softmax', 'softmax1' or 'ssmax', got {normalizer!r}; "
            "use chunk_size=None for other normalizers")
    check_attention_inputs(query, key, value, mask, bias, sink, query_lengths=query_lengths,
                           key_lengths=key_lengths)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    dropout_rate = check_dropout(dropout_rate, dropout_key)
    B, T, N, H = query.shape
    S = key.shape[1]
    q_offset = query_offset(T, S, causal_alignment)
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    C = min(chunk_size, S)
    n_chunks = -(-S // C)
    pad = n_chunks * C - S

    if normalizer == "softmax1":
        sink = 0.0
    sink_b = None if sink is None else jnp.broadcast_to(sink_for_logits(sink), (1, N, 1, 1))

    q = query.astype(jnp.float32) * scale
    log_n = None
    if normalizer == "ssmax":  # logits * log(n): n = keys visible to each query
        n = visible_key_count(mask, (B, N, T, S), is_causal=is_causal, window=window, q_offset=q_offset,
                              query_lengths=query_lengths, key_lengths=key_lengths)
        log_n = jnp.log(jnp.maximum(n, 1.0))  # (B, N, T, 1)

    def blocks(x, axis):  # pad the key axis to n_chunks * C and cut it into blocks
        x = jnp.pad(x, [(0, pad if a == axis else 0) for a in range(x.ndim)])
        x = jnp.moveaxis(x, axis, 0)
        x = x.reshape((n_chunks, C) + x.shape[1:])
        return jnp.moveaxis(x, 1, axis + 1)  # (n_chunks, ..., C at `axis`, ...)

    k_blocks = blocks(key, 1)  # (n, B, C, N, H)
    v_blocks = blocks(value, 1)
    valid_blocks = blocks(jnp.ones((S,), bool), 0)  # (n, C): False on padding keys
    mask_blocks = None if mask is None else blocks(broadcast_keys(mask, S), 3)  # (n, ..., C)
    bias_blocks = None if bias is None else blocks(broadcast_keys(bias, S), 3)

    @jax.checkpoint
    def step(carry, xs):
        m, l, acc = carry  # (B, N, T, 1), (B, N, T, 1), (B, T, N, H)
        k, v, valid, i, mk, bs = xs
        x = soft_cap(grouped_logits(q, k.astype(jnp.float32)), logit_cap)  # (B, N, T, C)
        if bs is not None:
            x = x + bs.astype(jnp.float32)
        if log_n is not None:
            x = x * log_n
        ok = valid[None, None, None, :]
        ok = combine_masks(ok, mk, structured_mask(T, q_offset, i * C, C, is_causal, window),
                           lengths_block_mask(query_lengths, key_lengths, T, i * C, C))
        x = jnp.where(ok, x, NEG)
        m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True)))
        p = jnp.where(ok, jnp.exp(x - m_new), 0.0)  # (B, N, T, C)
        correction = jnp.exp(m - m_new)
        l = l * correction + jnp.sum(p, axis=-1, keepdims=True)  # the denominator sees every weight
        if dropout_rate:  # only the numerator is dropped: weights = p / l, dropped after normalising
            p = dropout_weights(p, dropout_rate, jax.random.fold_in(dropout_key, i))
        acc = acc * jnp.transpose(correction, (0, 2, 1, 3)) + grouped_output(p, v.astype(jnp.float32))
        return (m_new, l, acc), None

    if sink_b is None:
        m0 = jnp.full((B, N, T, 1), NEG, jnp.float32)
        l0 = jnp.zeros((B, N, T, 1), jnp.float32)
    else:  # the sink is one more key with logit `sink` and value 0
        m0 = jnp.broadcast_to(sink_b, (B, N, T, 1)).astype(jnp.float32)
        l0 = jnp.ones((B, N, T, 1), jnp.float32)
    acc0 = jnp.zeros((B, T, N, H), jnp.float32)
    xs = (k_blocks, v_blocks, valid_blocks, jnp.arange(n_chunks), mask_blocks, bias_blocks)
    (m, l, acc), _ = jax.lax.scan(step, (m0, l0, acc0), xs)
    l = jnp.transpose(l, (0, 2, 1, 3))  # (B, T, N, 1)
    out = acc / jnp.where(l > 0, l, 1.0)  # fully masked rows: acc = 0 -> out = 0
    return out.astype(query.dtype)


def auto_chunk_size(T: int, S: int, threshold: int = 2048, chunk: int = 512) -> int | None:
    """The chunk size layers use by default: chunk when the key length reaches `threshold`.

    Measured on a 2-core CPU (see `tinytf bench attention`): at S >= 2048 the
    chunked path is as fast as the dense one and uses far less memory.
    """
    return chunk if S >= threshold else None


__all__ = ["chunked_attention", "auto_chunk_size"]
