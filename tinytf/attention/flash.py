"""Flash attention: the same maths, one (query block x key block) tile at a time, forward and backward.

FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023), after the online softmax of
Milakov & Gimelshein 2018 and the memory-efficient attention of Rabe & Staats 2021.
Queries are cut into blocks of Bq rows and keys into blocks of Bk columns. For each
query block we walk over the key blocks it can see and keep, per query row, the running
max m, the running denominator l and the running numerator acc:

    m' = max(m, max_j x_j);  l' = l e^{m-m'} + sum_j e^{x_j-m'};
    acc' = acc e^{m-m'} + sum_j e^{x_j-m'} v_j;            out = acc / l

Only a (Bq, Bk) tile of logits exists at a time. Tiles that a causal mask or a window
hides entirely are never visited: causal attention does about half the work.

The backward pass (a custom VJP) stores only the output and the log-sum-exp
L = m + log l per row, and recomputes each tile's weights P = exp(x - L):

    dV_j += P^T dO;   dP = dO V_j^T;   dX = P * (dP - D),  D_i = sum_h dO_ih O_ih;
    dQ_i += dX K_j * scale;   dK_j += dX^T Q_i * scale

so memory stays linear in length for training too. Everything the dense path supports
that has an online form works here: softmax, softmax1 and scalable softmax, a (learnable)
sink logit, soft-capping, masks and biases (a bias gets its gradient, accumulated tile by
tile), causal masks in either alignment, windows, per-example lengths, grouped-query
heads, and dropout (one mask per tile, drawn again in the backward pass).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from tinytf.attention.dense import (check_attention_inputs, check_dropout, grouped_logits, grouped_output,
                                    sink_for_logits)
from tinytf.attention.masks import (combine_masks, lengths_block_mask, query_offset, structured_mask,
                                    visible_key_count, window_bounds)
from tinytf.attention.normalizers import NEG, ONLINE_NORMALIZERS
from tinytf.checks import check_int

Array = jax.Array


@dataclass(frozen=True)
class _Plan:
    """Everything static about one call: shapes, blocks, and which features are on."""

    T: int
    S: int
    block_q: int
    block_k: int
    n_q: int
    n_k: int
    q_offset: int
    scale: float
    is_causal: bool
    window: object
    logit_cap: float | None
    dropout_rate: float
    has_sink: bool
    ssmax: bool
    groups: int  # N / K query heads per key/value head


def _slice(x: Array | None, axis: int, start, size: int) -> Array | None:
    """x[..., start:start+size, ...] along `axis`, or x itself where that axis is broadcast (size 1)."""
    if x is None or x.shape[axis] == 1:
        return x
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _key_block_range(plan: _Plan, i):
    """The key blocks [first, last) that query block i can see (all others are fully masked)."""
    lo_q = plan.q_offset + i * plan.block_q  # position of the block's first query among the keys
    hi_q = lo_q + plan.block_q - 1
    first, last = jnp.int32(0), jnp.int32(plan.n_k)
    bounds = window_bounds(plan.window)
    causal = plan.is_causal or (bounds is not None and bounds[2])
    if causal:
        last = jnp.clip(hi_q // plan.block_k + 1, 0, plan.n_k)
    if bounds is not None:
        first = jnp.clip((lo_q - bounds[0]) // plan.block_k, 0, plan.n_k)
        if not causal:
            last = jnp.clip((hi_q + bounds[1]) // plan.block_k + 1, 0, plan.n_k)
    return first, jnp.maximum(last, first)


def _query_block_range(plan: _Plan, j):
    """The query blocks [first, last) that can see key block j."""
    lo_k, hi_k = j * plan.block_k, j * plan.block_k + plan.block_k - 1
    first, last = jnp.int32(0), jnp.int32(plan.n_q)
    bounds = window_bounds(plan.window)
    causal = plan.is_causal or (bounds is not None and bounds[2])
    if causal:  # queries at positions >= lo_k
        first = jnp.clip((lo_k - plan.q_offset) // plan.block_q, 0, plan.n_q)
    if bounds is not None:  # queries at positions <= hi_k + left
        last = jnp.clip((hi_k + bounds[0] - plan.q_offset) // plan.block_q + 1, 0, plan.n_q)
        if not causal:
            first = jnp.clip((lo_k - bounds[1] - plan.q_offset) // plan.block_q, 0, plan.n_q)
    return first, jnp.maximum(last, first)


def _tile(plan: _Plan, q, k, i, j, bias, mask, log_n, q_len, k_len, dropout_key):
    """Logits of tile (i, j) after cap, bias and ssmax scaling, its mask, and its dropout mask.

    Returns x (B, N, Bq, Bk) with masked entries NEG, c (the capped logits, for the cap's
    derivative, or None), ok (bool), keep (dropout's kept entries / keep-prob, or None).
    """
    s = grouped_logits(q, k) * plan.scale  # (B, N, Bq, Bk)
    c = None
    if plan.logit_cap is not None:
        c = plan.logit_cap * jnp.tanh(s / plan.logit_cap)
        s = c
    if bias is not None:
        s = s + _slice(_slice(bias, 2, i * plan.block_q, plan.block_q), 3, j * plan.block_k, plan.block_k)
    if log_n is not None:
        s = s * _slice(log_n, 2, i * plan.block_q, plan.block_q)
    valid_k = (j * plan.block_k + jnp.arange(plan.block_k) < plan.S)[None, None, None, :]  # padding keys
    ok = combine_masks(
        valid_k,
        None if mask is None else _slice(_slice(mask, 2, i * plan.block_q, plan.block_q), 3, j * plan.block_k,
                                         plan.block_k),
        structured_mask(plan.block_q, plan.q_offset + i * plan.block_q, j * plan.block_k, plan.block_k,
                        plan.is_causal, plan.window),
        lengths_block_mask(q_len, k_len, plan.block_q, j * plan.block_k, plan.block_k, i * plan.block_q))
    if q_len is None:  # padding queries (beyond T) see nothing
        ok = ok & (i * plan.block_q + jnp.arange(plan.block_q) < plan.T)[None, None, :, None]
    keep = None
    if plan.dropout_rate:
        key = jax.random.fold_in(jax.random.fold_in(dropout_key, i), j)
        kept = jax.random.bernoulli(key, 1.0 - plan.dropout_rate, s.shape)
        keep = jnp.where(kept, 1.0 / (1.0 - plan.dropout_rate), 0.0)
    return jnp.where(ok, s, NEG), c, ok, keep


def _forward(plan: _Plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key):
    """out (B, Tp, N, H) float32 and L (B, N, Tp) log-sum-exp per row (0 for rows that see nothing)."""
    B, Tp, N, H = q.shape

    def query_block(i):
        qi = jax.lax.dynamic_slice_in_dim(q, i * plan.block_q, plan.block_q, axis=1)  # (B, Bq, N, H)

        def body(j, carry):
            m, l, acc = carry  # (B, N, Bq, 1) x2, (B, Bq, N, H)
            kj = jax.lax.dynamic_slice_in_dim(k, j * plan.block_k, plan.block_k, axis=1)
            vj = jax.lax.dynamic_slice_in_dim(v, j * plan.block_k, plan.block_k, axis=1)
            x, _, ok, keep = _tile(plan, qi, kj, i, j, bias, mask, log_n, q_len, k_len, dropout_key)
            m_new = jnp.maximum(m, jnp.max(x, axis=-1, keepdims=True))
            p = jnp.where(ok, jnp.exp(x - m_new), 0.0)  # (B, N, Bq, Bk)
            correction = jnp.exp(m - m_new)
            l = l * correction + jnp.sum(p, axis=-1, keepdims=True)  # the denominator sees every weight
            if keep is not None:
                p = p * keep
            acc = acc * jnp.transpose(correction, (0, 2, 1, 3)) + grouped_output(p, vj)
            return m_new, l, acc

        if sink is None:
            m0 = jnp.full((B, N, plan.block_q, 1), NEG, jnp.float32)
            l0 = jnp.zeros((B, N, plan.block_q, 1), jnp.float32)
        else:  # the sink is one more key with logit `sink` and value 0
            m0 = jnp.broadcast_to(sink_for_logits(sink), (B, N, plan.block_q, 1)).astype(jnp.float32)
            l0 = jnp.ones((B, N, plan.block_q, 1), jnp.float32)
        acc0 = jnp.zeros((B, plan.block_q, N, H), jnp.float32)
        first, last = _key_block_range(plan, i)
        m, l, acc = jax.lax.fori_loop(first, last, body, (m0, l0, acc0))
        lt = jnp.transpose(l, (0, 2, 1, 3))  # (B, Bq, N, 1)
        out = acc / jnp.where(lt > 0, lt, 1.0)  # rows that see nothing: acc = 0 -> out = 0
        lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), 0.0)[..., 0]  # (B, N, Bq)
        return out, lse

    outs, lses = jax.lax.map(query_block, jnp.arange(plan.n_q))  # (n_q, B, Bq, N, H), (n_q, B, N, Bq)
    out = jnp.moveaxis(outs, 0, 1).reshape(B, Tp, N, H)
    lse = jnp.moveaxis(lses, 0, 2).reshape(B, N, Tp)
    return out, lse


def _group_sum(x: Array, groups: int) -> Array:
    """(B, S, N, H) -> (B, S, K, H): sum the N / K query heads that share a key/value head."""
    if groups == 1:
        return x
    B, S, N, H = x.shape
    return x.reshape(B, S, N // groups, groups, H).sum(3)


def _reduce_to(x: Array, shape: tuple) -> Array:
    """Sum x over the axes where `shape` broadcasts (has size 1)."""
    axes = tuple(a for a, (n, m) in enumerate(zip(x.shape, shape)) if m == 1 and n != 1)
    return x.sum(axes, keepdims=True) if axes else x


def _backward(plan: _Plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key, out, lse, dout):
    """Gradients of q, k, v (and bias, sink) by recomputing each tile's weights."""
    B, Tp, N, H = q.shape
    Sp, K = k.shape[1], k.shape[2]
    D = jnp.einsum("btnh,btnh->bnt", dout, out)  # (B, N, Tp): sum_h dO O per row
    dbias0 = None if bias is None else jnp.zeros(bias.shape, jnp.float32)

    def key_block(carry, j):
        dq, dbias = carry
        kj = jax.lax.dynamic_slice_in_dim(k, j * plan.block_k, plan.block_k, axis=1)  # (B, Bk, K, H)
        vj = jax.lax.dynamic_slice_in_dim(v, j * plan.block_k, plan.block_k, axis=1)

        def body(i, inner):
            dk, dv, dq, dbias = inner
            qi = jax.lax.dynamic_slice_in_dim(q, i * plan.block_q, plan.block_q, axis=1)  # (B, Bq, N, H)
            doi = jax.lax.dynamic_slice_in_dim(dout, i * plan.block_q, plan.block_q, axis=1)
            li = jax.lax.dynamic_slice_in_dim(lse, i * plan.block_q, plan.block_q, axis=2)[..., None]
            di = jax.lax.dynamic_slice_in_dim(D, i * plan.block_q, plan.block_q, axis=2)[..., None]
            x, c, ok, keep = _tile(plan, qi, kj, i, j, bias, mask, log_n, q_len, k_len, dropout_key)
            p = jnp.where(ok, jnp.exp(x - li), 0.0)  # (B, N, Bq, Bk) the weights
            p_used = p if keep is None else p * keep  # what multiplied the values
            dv = dv + _group_sum(jnp.einsum("bnts,btnh->bsnh", p_used, doi), plan.groups)
            dp = grouped_logits(doi, vj)  # (B, N, Bq, Bk) dO . v
            if keep is not None:
                dp = dp * keep
            dx = p * (dp - di)  # through the softmax
            if log_n is not None:
                dx = dx * _slice(log_n, 2, i * plan.block_q, plan.block_q)
            if dbias is not None:
                g = _reduce_to(dx, dbias.shape)
                start = [0, 0, i * plan.block_q if dbias.shape[2] > 1 else 0,
                         j * plan.block_k if dbias.shape[3] > 1 else 0]
                dbias = jax.lax.dynamic_update_slice(
                    dbias, jax.lax.dynamic_slice(dbias, start, g.shape) + g, start)
            if c is not None:  # through the cap: d(c tanh(s/c))/ds = 1 - tanh^2
                dx = dx * (1.0 - (c / plan.logit_cap) ** 2)
            ds = dx * plan.scale
            dqi = grouped_output(ds, kj)  # (B, Bq, N, H)
            dq = jax.lax.dynamic_update_slice_in_dim(
                dq, jax.lax.dynamic_slice_in_dim(dq, i * plan.block_q, plan.block_q, axis=1) + dqi,
                i * plan.block_q, axis=1)
            dk = dk + _group_sum(jnp.einsum("bnts,btnh->bsnh", ds, qi), plan.groups)
            return dk, dv, dq, dbias

        zeros = jnp.zeros((B, plan.block_k, K, H), jnp.float32)
        first, last = _query_block_range(plan, j)
        dk, dv, dq, dbias = jax.lax.fori_loop(first, last, body, (zeros, zeros, dq, dbias))
        return (dq, dbias), (dk, dv)

    (dq, dbias), (dks, dvs) = jax.lax.scan(key_block, (jnp.zeros_like(q), dbias0), jnp.arange(plan.n_k))
    dk = jnp.moveaxis(dks, 0, 1).reshape(B, Sp, K, H)
    dv = jnp.moveaxis(dvs, 0, 1).reshape(B, Sp, K, H)
    dsink = None
    if sink is not None:  # the sink's weight exp(sink - L) has value 0: dS_sink = -P_sink * D
        per_head = sink[:, None] if jnp.ndim(sink) else sink  # (N, 1) or ()
        p_sink = jnp.exp(per_head - lse)  # (B, N, Tp)
        valid = (jnp.arange(Tp) < plan.T)[None, None, :]
        dsink = -jnp.sum(jnp.where(valid, p_sink * D, 0.0), axis=(0, 2))  # (N,)
        dsink = dsink.reshape(jnp.shape(sink)) if jnp.ndim(sink) else dsink.sum()
    return dq, dk, dv, dbias, dsink


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key):
    return _forward(plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key)[0]


def _flash_fwd(plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key):
    out, lse = _forward(plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key)
    return out, (q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key, out, lse)


def _flash_bwd(plan, saved, dout):
    q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key, out, lse = saved
    dq, dk, dv, dbias, dsink = _backward(plan, q, k, v, bias, sink, mask, log_n, q_len, k_len, dropout_key,
                                         out, lse, dout)
    return dq, dk, dv, dbias, dsink, None, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad(x: Array | None, axis: int, size: int) -> Array | None:
    """Zero-pad `axis` of x to `size` (unless it is a broadcast axis of size 1)."""
    if x is None or x.shape[axis] in (1, size):
        return x
    return jnp.pad(x, [(0, size - x.shape[axis] if a == axis else 0) for a in range(x.ndim)])


def flash_attention(
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
    block_q: int = 512,
    block_k: int = 512,
) -> Array:
    """Attention tile by tile (FlashAttention); the weights are never formed. Arguments as
    `dot_product_attention`; `block_q` / `block_k` are the tile sizes.

    Returns:
      out (B, T, N, H) in the dtype of query.
    """
    if normalizer not in ONLINE_NORMALIZERS:
        raise ValueError(
            f"flash attention supports normalizer 'softmax', 'softmax1' or 'ssmax', got {normalizer!r}; "
            "use the dense path (chunk_size=None) for other normalizers")
    check_attention_inputs(query, key, value, mask, bias, sink, query_lengths=query_lengths,
                           key_lengths=key_lengths)
    block_q, block_k = check_int("block_q", block_q, low=1), check_int("block_k", block_k, low=1)
    dropout_rate = check_dropout(dropout_rate, dropout_key)
    window_bounds(window)
    B, T, N, H = query.shape
    S, K = key.shape[1], key.shape[2]
    block_q, block_k = min(block_q, T), min(block_k, S)
    n_q, n_k = -(-T // block_q), -(-S // block_k)
    Tp, Sp = n_q * block_q, n_k * block_k
    plan = _Plan(T=T, S=S, block_q=block_q, block_k=block_k, n_q=n_q, n_k=n_k,
                 q_offset=query_offset(T, S, causal_alignment), scale=1.0 / math.sqrt(H) if scale is None else scale,
                 is_causal=is_causal, window=window, logit_cap=logit_cap, dropout_rate=dropout_rate,
                 has_sink=sink is not None or normalizer == "softmax1", ssmax=normalizer == "ssmax", groups=N // K)
    if normalizer == "softmax1":
        sink = jnp.float32(0.0)
    log_n = None
    if normalizer == "ssmax":  # logits * log(n): n = keys visible to each query, no gradient
        n = visible_key_count(mask, (B, N, T, S), is_causal=is_causal, window=window, q_offset=plan.q_offset,
                              query_lengths=query_lengths, key_lengths=key_lengths)
        log_n = _pad(jnp.log(jnp.maximum(n, 1.0)), 2, Tp)  # (B|1, N|1, Tp, 1)

    def rank4(x):
        return None if x is None else x.reshape((1,) * (4 - x.ndim) + x.shape)

    q = _pad(query.astype(jnp.float32), 1, Tp)
    k = _pad(key.astype(jnp.float32), 1, Sp)
    v = _pad(value.astype(jnp.float32), 1, Sp)
    bias4 = _pad(_pad(rank4(bias), 2, Tp), 3, Sp)
    bias4 = None if bias4 is None else bias4.astype(jnp.float32)
    mask4 = _pad(_pad(rank4(mask), 2, Tp), 3, Sp)
    sink_in = None if sink is None else jnp.asarray(sink, jnp.float32)
    out = _flash(plan, q, k, v, bias4, sink_in, mask4, log_n, query_lengths, key_lengths, dropout_key)
    return out[:, :T].astype(query.dtype)


def auto_tiles(T: int, S: int, threshold: int = 1024) -> tuple[int, int] | None:
    """The tiles layers use by default: (block_q, block_k) = (512, 256) once S reaches `threshold`.

    Measured on a 2-core CPU with `tinytf bench attention` (B=1, N=8, H=64, causal, forward and
    backward): at S = 512 the dense path is as fast as jax.nn and a single flash tile cannot
    skip anything; from S = 1024 flash is about twice as fast as jax.nn, and its memory stays
    linear in length. Taller query tiles than key tiles did best at 4096-8192.
    """
    return (512, 256) if S >= threshold else None


__all__ = ["flash_attention", "auto_tiles"]
