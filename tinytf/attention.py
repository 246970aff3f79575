"""Attention as pure functions: the first file to read in tinytf.

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need"):

    Attention(Q, K, V) = normalize(Q K^T * scale + bias, mask) V,   scale = 1/sqrt(H)

Reading order:
  1. masks (`causal_mask`, `padding_mask`, `sliding_window_mask`, `combine_masks`);
  2. normalizers: how one row of logits becomes weights (`softmax`, `softmax1`,
     `ssmax`, `sigmoid`);
  3. `dot_product_attention`, the function every layer calls;
  4. `chunked_attention`, the same maths in O(length) memory (online softmax).

Layout (JAX's own, so `jax.nn.dot_product_attention` is a drop-in oracle):
query (B, T, N, H), key/value (B, S, N, H), weights (B, N, T, S), where B is batch,
T query length, S key length, N heads, H head dim. Masks are boolean, True = may
attend, broadcastable to (B, N, T, S).

A query row whose keys are all masked gets zero weights and a zero output (not
NaN), and its gradients are finite: padding rows are common and must not poison
training.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Normalizer = Callable[[Array, Array | None], Array]

# A finite "minus infinity": exp(_NEG - max) underflows to exactly 0, and unlike -inf
# it never produces inf - inf = NaN in the forward or backward pass.
_NEG = -1e30


# ----------------------------------------------------------------------------- masks
def causal_mask(T: int, S: int | None = None) -> Array:
    """Causal mask: query i may attend to keys j <= i (+ S - T when S > T).

    When S > T the queries are the *last* T positions of a length-S sequence
    (decoding with a cache), so query i sits at absolute position i + S - T.

    Returns:
      (1, 1, T, S) bool.
    """
    S = T if S is None else S
    offset = S - T
    q = jnp.arange(T)[:, None] + offset  # (T, 1) absolute query positions
    k = jnp.arange(S)[None, :]  # (1, S)
    return (k <= q)[None, None]


def padding_mask(lengths: Array, S: int) -> Array:
    """Key padding mask from sequence lengths: key j is valid iff j < lengths[b].

    Args:
      lengths: (B,) int, number of valid keys per sequence.
      S: padded key length.

    Returns:
      (B, 1, 1, S) bool.
    """
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape (B,), got {lengths.shape}")
    return (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]


def sliding_window_mask(T: int, window: int, S: int | None = None) -> Array:
    """Causal sliding window (Longformer / Mistral): query i sees keys i-window+1 .. i.

    Returns:
      (1, 1, T, S) bool.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    S = T if S is None else S
    q = jnp.arange(T)[:, None] + (S - T)  # (T, 1) absolute query positions
    k = jnp.arange(S)[None, :]
    return ((k <= q) & (k > q - window))[None, None]


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of masks (None entries are ignored); None if all are None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


def _structured_mask(T: int, S: int, q_offset: int, k_start, size: int, is_causal: bool, window: int | None):
    """Causal / window mask for queries 0..T-1 and keys k_start..k_start+size-1, or None."""
    if not is_causal and window is None:
        return None
    q = jnp.arange(T)[:, None] + q_offset  # (T, 1) absolute positions
    k = k_start + jnp.arange(size)[None, :]  # (1, size)
    ok = jnp.ones((T, size), bool)
    if is_causal or window is not None:  # a window here is always causal
        ok &= k <= q
    if window is not None:
        ok &= k > q - window
    return ok[None, None]  # (1, 1, T, size)


# ----------------------------------------------------------------------- normalizers
def softmax(logits: Array, mask: Array | None = None) -> Array:
    """Masked softmax over the last axis: exp(x_i) / sum_j exp(x_j), stably.

    Rows with no valid entry give all zeros. Computed in float32.
    """
    return _softmax_with_sink(logits, mask, sink=None)


def softmax1(logits: Array, mask: Array | None = None) -> Array:
    """Off-by-one softmax (Miller 2023, "Attention is off by one"): exp(x_i) / (1 + sum_j exp(x_j)).

    Equivalent to an extra key with logit 0 and value 0, so a head can attend to
    "nothing": the weights of a row sum to less than one.
    """
    return _softmax_with_sink(logits, mask, sink=0.0)


def _softmax_with_sink(logits: Array, mask: Array | None, sink) -> Array:
    """Softmax with an optional extra zero-value key of logit `sink` (scalar or (N,1,1)).

    Math: w_i = exp(x_i - m) / (exp(sink - m) + sum_j exp(x_j - m)), m = max(max_j x_j, sink).
    """
    x = logits.astype(jnp.float32)
    if mask is not None:
        x = jnp.where(mask, x, _NEG)
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


def _visible_keys(logits: Array, mask: Array | None) -> Array:
    """Number of keys each query may see, broadcastable to logits[..., :1]."""
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


def get_normalizer(normalizer: str | Normalizer) -> Normalizer:
    """Look up a normalizer by name, or pass a callable `(logits, mask) -> weights` through."""
    if callable(normalizer):
        return normalizer
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {normalizer!r}")
    return NORMALIZERS[normalizer]


# ------------------------------------------------------------------------ validation
def _check_inputs(query, key, value, mask, bias, sink):
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


def _sink_for_logits(sink):
    """(N,) or scalar -> broadcastable to (B, N, T, 1)."""
    sink = jnp.asarray(sink, jnp.float32)
    return sink[:, None, None] if sink.ndim == 1 else sink


# ---------------------------------------------------------------- the main function
def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None = None,
    *,
    bias: Array | None = None,
    scale: float | None = None,
    normalizer: str | Normalizer = "softmax",
    sink: Array | float | None = None,
    is_causal: bool = False,
    window: int | None = None,
    chunk_size: int | None = None,
    implementation: str | None = None,
) -> tuple[Array, Array | None]:
    """Scaled dot-product attention with masks, biases and pluggable normalizers.

    Math: weights = normalize(Q K^T * scale + bias, mask); out = weights V.

    Args:
      query: (B, T, N, H).
      key: (B, S, N, H).
      value: (B, S, N, H).
      mask: optional bool, broadcastable to (B, N, T, S); True = may attend.
      bias: optional float, broadcastable to (B, N, T, S), added to the logits
        (ALiBi, relative positions, DETR's spatial term).
      scale: logit scale; default 1/sqrt(H).
      normalizer: "softmax", "softmax1" (Miller 2023), "ssmax" (Nakanishi 2025),
        "sigmoid" (Gu et al. 2024) or a callable (logits, mask) -> weights.
      sink: optional learnable "sink" logit, scalar or per head (N,): an extra key
        with this logit and a zero value (gpt-oss style; softmax1 is sink = 0).
        Only with normalizer="softmax".
      is_causal: apply a causal mask without materialising it (queries are the last
        T of S positions).
      window: causal sliding window of this many keys (implies causal).
      chunk_size: if set, use `chunked_attention` over key blocks of this size:
        memory linear in S, and weights are returned as None.
      implementation: None (tinytf's own) or "cudnn": hand the computation to
        `jax.nn.dot_product_attention(implementation="cudnn")` on a GPU (bf16/fp16,
        softmax, no sink/bias-free masks only; returns weights=None).

    Returns:
      out: (B, T, N, H), in the dtype of query.
      weights: (B, N, T, S) in float32, or None on the chunked and cuDNN paths.
    """
    _check_inputs(query, key, value, mask, bias, sink)
    if sink is not None and normalizer not in ("softmax",):
        raise ValueError(f"sink= works with normalizer='softmax' only, got normalizer={normalizer!r}")
    B, T, N, H = query.shape
    S = key.shape[1]
    scale = 1.0 / math.sqrt(H) if scale is None else scale

    if implementation is not None:
        return _fused_attention(query, key, value, mask, bias, scale, normalizer, sink,
                                is_causal, window, implementation), None
    if chunk_size is not None:
        out = chunked_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer,
                                sink=sink, is_causal=is_causal, window=window, chunk_size=chunk_size)
        return out, None

    # Logits in float32 whatever the input dtype (bf16 softmax loses too much).
    logits = jnp.einsum("btnh,bsnh->bnts", query.astype(jnp.float32), key.astype(jnp.float32))  # (B, N, T, S)
    logits = logits * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    mask = combine_masks(mask, _structured_mask(T, S, S - T, 0, S, is_causal, window))

    if sink is not None:
        weights = _softmax_with_sink(logits, mask, _sink_for_logits(sink))
    else:
        weights = get_normalizer(normalizer)(logits, mask)
    if weights.shape != logits.shape:
        raise ValueError(f"normalizer returned shape {weights.shape}, expected the logits' shape {logits.shape}")
    out = jnp.einsum("bnts,bsnh->btnh", weights, value.astype(jnp.float32))  # (B, T, N, H)
    return out.astype(query.dtype), weights


# -------------------------------------------------------------- chunked (flash-style)
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
    window: int | None = None,
    chunk_size: int = 512,
) -> Array:
    """Memory-efficient attention: online softmax over key blocks.

    Rabe & Staats 2021 ("Self-attention Does Not Need O(n^2) Memory") and the
    FlashAttention recurrence (Dao et al. 2022). Keys are processed in blocks of
    C = chunk_size with `lax.scan`; for each query we carry the running max m, the
    running denominator l and the running numerator acc:

        m' = max(m, max_j x_j);  l' = l e^{m-m'} + sum_j e^{x_j-m'};
        acc' = acc e^{m-m'} + sum_j e^{x_j-m'} v_j;          out = acc / l

    Only (B, N, T, C) logits exist at a time, so memory is linear in S; the scan
    body is wrapped in `jax.checkpoint`, so the backward pass recomputes each
    block instead of storing it and stays linear too.

    Supports the normalizers "softmax", "softmax1" and "ssmax", a per-head `sink`,
    masks and biases broadcastable to (B, N, T, S) (sliced per block), and the
    structured `is_causal` / `window` masks, which are built per block and never
    materialised. Returns out (B, T, N, H); the weights are never formed.
    """
    if normalizer not in ("softmax", "softmax1", "ssmax"):
        raise ValueError(
            f"chunked attention supports normalizer 'softmax', 'softmax1' or 'ssmax', got {normalizer!r}; "
            "use chunk_size=None for other normalizers")
    _check_inputs(query, key, value, mask, bias, sink)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, N, H = query.shape
    S = key.shape[1]
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    C = min(chunk_size, S)
    n_chunks = -(-S // C)
    pad = n_chunks * C - S

    if normalizer == "softmax1":
        sink = 0.0
    sink_b = None if sink is None else jnp.broadcast_to(_sink_for_logits(sink), (1, N, 1, 1))

    q = query.astype(jnp.float32) * scale
    log_n = None
    if normalizer == "ssmax":  # logits * log(n): n = keys visible to each query
        log_n = jnp.log(jnp.maximum(_count_visible(mask, B, N, T, S, is_causal, window), 1.0))  # (B, N, T, 1)

    def blocks(x, axis):  # pad the key axis to n_chunks * C and cut it into blocks
        x = jnp.pad(x, [(0, pad if a == axis else 0) for a in range(x.ndim)])
        x = jnp.moveaxis(x, axis, 0)
        x = x.reshape((n_chunks, C) + x.shape[1:])
        return jnp.moveaxis(x, 1, axis + 1)  # (n_chunks, ..., C at `axis`, ...)

    k_blocks = blocks(key, 1)  # (n, B, C, N, H)
    v_blocks = blocks(value, 1)
    valid_blocks = blocks(jnp.ones((S,), bool), 0)  # (n, C): False on padding keys
    mask_blocks = None if mask is None else blocks(_broadcast_last(mask, S), 3)  # (n, ..., C)
    bias_blocks = None if bias is None else blocks(_broadcast_last(bias, S), 3)

    @jax.checkpoint
    def step(carry, xs):
        m, l, acc = carry  # (B, N, T, 1), (B, N, T, 1), (B, T, N, H)
        k, v, valid, i, mk, bs = xs
        x = jnp.einsum("btnh,bsnh->bnts", q, k.astype(jnp.float32))  # (B, N, T, C)
        if bs is not None:
            x = x + bs.astype(jnp.float32)
        if log_n is not None:
            x = x * log_n
        ok = valid[None, None, None, :]
        ok = combine_masks(ok, mk, _structured_mask(T, S, S - T, i * C, C, is_causal, window))
        x = jnp.where(ok, x, _NEG)
        m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True)))
        p = jnp.where(ok, jnp.exp(x - m_new), 0.0)  # (B, N, T, C)
        correction = jnp.exp(m - m_new)
        l = l * correction + jnp.sum(p, axis=-1, keepdims=True)
        acc = acc * jnp.transpose(correction, (0, 2, 1, 3)) + jnp.einsum(
            "bnts,bsnh->btnh", p, v.astype(jnp.float32))
        return (m_new, l, acc), None

    if sink_b is None:
        m0 = jnp.full((B, N, T, 1), _NEG, jnp.float32)
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


def _broadcast_last(x: Array, S: int) -> Array:
    """Give a (..., 1 or S) mask/bias a full key axis and rank 4."""
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.broadcast_to(x, x.shape[:-1] + (S,))


def _count_visible(mask, B, N, T, S, is_causal, window) -> Array:
    """Number of keys each query sees, (B, N, T, 1) float32, without an (S, S) array when possible."""
    if mask is None:
        q = jnp.arange(T) + (S - T)  # absolute query positions
        n = jnp.full((T,), float(S))
        if is_causal or window is not None:
            n = (q + 1).astype(jnp.float32)
        if window is not None:
            n = jnp.minimum(n, float(window))
        return jnp.broadcast_to(n[None, None, :, None], (B, N, T, 1))
    full = combine_masks(_broadcast_last(mask, S), _structured_mask(T, S, S - T, 0, S, is_causal, window))
    return jnp.sum(jnp.broadcast_to(full, (B, N, T, S)), axis=-1, keepdims=True).astype(jnp.float32)


# ----------------------------------------------------------------------- fused (GPU)
def cudnn_supported(query: Array, normalizer, sink, bias) -> bool:
    """True if `implementation="cudnn"` can run this call: GPU, bf16/fp16, plain softmax, no sink."""
    try:
        on_gpu = jax.default_backend() == "gpu"
    except RuntimeError:
        on_gpu = False
    return (on_gpu and query.dtype in (jnp.bfloat16, jnp.float16)
            and normalizer == "softmax" and sink is None)


def _fused_attention(query, key, value, mask, bias, scale, normalizer, sink, is_causal, window, implementation):
    """Hand off to jax.nn.dot_product_attention's cuDNN kernel (GPU only, guarded)."""
    if implementation != "cudnn":
        raise ValueError(f"implementation must be None or 'cudnn', got {implementation!r}")
    if not cudnn_supported(query, normalizer, sink, bias):
        raise ValueError(
            "implementation='cudnn' needs a GPU, bfloat16/float16 inputs, normalizer='softmax' and no sink; "
            f"got backend={jax.default_backend()!r}, dtype={query.dtype}, normalizer={normalizer!r}, "
            f"sink={'set' if sink is not None else None}")
    window_size = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal or window is not None,
        local_window_size=window_size, implementation="cudnn")


def auto_chunk_size(T: int, S: int, threshold: int = 2048, chunk: int = 512) -> int | None:
    """The chunk size layers use by default: chunk when the key length reaches `threshold`.

    Measured on a 2-core CPU (see `tinytf bench attention`): at S >= 2048 the
    chunked path is as fast as the dense one and uses far less memory.
    """
    return chunk if S >= threshold else None


__all__ = [
    "causal_mask", "padding_mask", "sliding_window_mask", "combine_masks",
    "softmax", "softmax1", "ssmax", "sigmoid", "NORMALIZERS", "get_normalizer",
    "dot_product_attention", "chunked_attention", "auto_chunk_size", "cudnn_supported",
]

