"""`dot_product_attention`: the one attention function every tinytf layer calls.

It checks its inputs, then computes the same maths on one of three paths:
dense (`dense.py`, every weight materialised and returned), chunked (`chunked.py`,
online softmax over key blocks, memory linear in length, weights not formed), or
fused (`fused.py`, cuDNN on a GPU).
"""

from __future__ import annotations

import math

import jax

from tinytf.attention.chunked import chunked_attention
from tinytf.attention.dense import check_attention_inputs, dense_attention
from tinytf.attention.fused import fused_attention
from tinytf.attention.normalizers import Normalizer

Array = jax.Array


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
    logit_cap: float | None = None,
    chunk_size: int | None = None,
    implementation: str | None = None,
) -> tuple[Array, Array | None]:
    """Scaled dot-product attention with masks, biases and pluggable normalizers.

    Math: weights = normalize(cap(Q K^T * scale) + bias, mask); out = weights V.

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
      logit_cap: soft-cap the scaled logits to (-cap, cap) with cap * tanh(x / cap)
        before the bias (Gemma 2); None = no cap.
      chunk_size: if set, use `chunked_attention` over key blocks of this size:
        memory linear in S, and weights are returned as None.
      implementation: None (tinytf's own) or "cudnn": hand the computation to
        `jax.nn.dot_product_attention(implementation="cudnn")` on a GPU (bf16/fp16,
        softmax, no sink or cap; returns weights=None).

    Returns:
      out: (B, T, N, H), in the dtype of query.
      weights: (B, N, T, S) in float32, or None on the chunked and cuDNN paths.
    """
    check_attention_inputs(query, key, value, mask, bias, sink)
    if sink is not None and normalizer not in ("softmax",):
        raise ValueError(f"sink= works with normalizer='softmax' only, got normalizer={normalizer!r}")
    if logit_cap is not None and not logit_cap > 0:
        raise ValueError(f"logit_cap must be > 0 or None, got {logit_cap!r}")
    H = query.shape[-1]
    scale = 1.0 / math.sqrt(H) if scale is None else scale

    if implementation is not None:
        return fused_attention(query, key, value, mask, bias, scale, normalizer, sink, is_causal, window,
                               logit_cap, implementation), None
    if chunk_size is not None:
        out = chunked_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer,
                                sink=sink, is_causal=is_causal, window=window, logit_cap=logit_cap,
                                chunk_size=chunk_size)
        return out, None
    return dense_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer, sink=sink,
                           is_causal=is_causal, window=window, logit_cap=logit_cap)


__all__ = ["dot_product_attention"]
