"""`dot_product_attention`: the one attention function every tinytf layer calls.

It checks its inputs, then computes the same maths on one of three paths, picking the
fastest correct one unless told otherwise: dense (`dense.py`, every weight materialised
and returned; the fastest for short inputs), flash (`flash.py`, tile by tile with the
online softmax, causal tiles skipped, memory linear in length in the forward and backward
passes; the weights are not formed), or fused (`fused.py`, cuDNN on a GPU).
"""

from __future__ import annotations

import math

import jax

from tinytf.attention.flash import auto_tiles, flash_attention
from tinytf.attention.dense import check_attention_inputs, check_dropout, dense_attention
from tinytf.attention.masks import query_offset, window_bounds
from tinytf.attention.fused import fused_attention
from tinytf.attention.normalizers import ONLINE_NORMALIZERS, Normalizer
from tinytf.checks import check_int

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
    causal_alignment: str = "bottom_right",
    window: int | tuple[int, int] | None = None,
    query_lengths: Array | None = None,
    key_lengths: Array | None = None,
    logit_cap: float | None = None,
    dropout_rate: float = 0.0,
    dropout_key: Array | None = None,
    chunk_size: int | str | None = "auto",
    need_weights: bool = False,
    implementation: str | None = None,
) -> tuple[Array, Array | None]:
    """Scaled dot-product attention with masks, biases and pluggable normalizers.

    Math: weights = normalize(cap(Q K^T * scale) + bias, mask); out = weights V.

    Args:
      query: (B, T, N, H).
      key: (B, S, K, H); K = N (multi-head), 1 <= K < N with N % K == 0 (grouped-query,
        Ainslie et al. 2023) or K = 1 (multi-query, Shazeer 2019): query head n uses
        key/value head n // (N / K), as in jax.nn.
      value: (B, S, K, H).
      mask: optional bool, broadcastable to (B, N, T, S); True = may attend.
      bias: optional float, broadcastable to (B, N, T, S), added to the logits
        (ALiBi, relative positions, DETR's spatial term).
      scale: logit scale; default 1/sqrt(H).
      normalizer: "softmax", "softmax1" (Miller 2023), "ssmax" (Nakanishi 2025),
        "sigmoid" (Gu et al. 2024) or a callable (logits, mask) -> weights.
      sink: optional learnable "sink" logit, scalar or per head (N,): an extra key
        with this logit and a zero value (gpt-oss style; softmax1 is sink = 0).
        Only with normalizer="softmax".
      is_causal: apply a causal mask without materialising it.
      causal_alignment: where the queries sit among the keys when T != S:
        "bottom_right" (default: the last query at the last key, as in decoding with a
        cache) or "top_left" (query i at key i: jax.nn's and PyTorch's convention).
        Applies to is_causal and to windows.
      window: an int W, the causal sliding window of W keys (implies causal;
        Beltagy et al. 2020), or a pair (left, right): query i sees keys i-left ..
        i+right (jax.nn's local_window_size, for encoders).
      query_lengths, key_lengths: optional (B,) int: per-example lengths (padding);
        queries at i >= query_lengths[b] get zero output, keys at j >= key_lengths[b]
        are masked (jax.nn's query_seq_lengths / key_value_seq_lengths).
      logit_cap: soft-cap the scaled logits to (-cap, cap) with cap * tanh(x / cap)
        before the bias (Gemma 2); None = no cap.
      dropout_rate, dropout_key: attention dropout on the weights (training only; the
        caller passes rate 0 in evaluation), with the key that draws the mask.
      chunk_size: the path. "auto" (default): flash (`auto_tiles`: 512 x 256 tiles) when
        S >= 1024 and the normalizer has an online form (softmax, softmax1, ssmax), dense
        otherwise; an int:
        flash with tiles of that size (memory linear in length, weights None); None: dense.
      need_weights: True forces the dense path, which returns the weights.
      implementation: None (tinytf's own) or "cudnn": hand the computation to
        `jax.nn.dot_product_attention(implementation="cudnn")` on a GPU (bf16/fp16,
        softmax, no sink or cap; returns weights=None).

    Returns:
      out: (B, T, N, H), in the dtype of query.
      weights: (B, N, T, S) in float32, or None on the flash and cuDNN paths.
    """
    check_attention_inputs(query, key, value, mask, bias, sink, query_lengths=query_lengths,
                           key_lengths=key_lengths)
    if sink is not None and normalizer not in ("softmax",):
        raise ValueError(f"sink= works with normalizer='softmax' only, got normalizer={normalizer!r}")
    if logit_cap is not None and (isinstance(logit_cap, bool) or not isinstance(logit_cap, (int, float))
                                  or not logit_cap > 0):
        raise ValueError(f"logit_cap must be a number > 0 or None, got {logit_cap!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise ValueError(f"scale must be a number > 0 or None (= 1/sqrt(H)), got {scale!r}")
    window_bounds(window)  # checks it
    B, T, N, H = query.shape
    S = key.shape[1]
    q_offset = query_offset(T, S, causal_alignment)
    dropout_rate = check_dropout(dropout_rate, dropout_key)
    scale = 1.0 / math.sqrt(H) if scale is None else scale

    if implementation is not None:
        return fused_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer, sink=sink,
                               is_causal=is_causal, causal_alignment=causal_alignment, window=window,
                               query_lengths=query_lengths, key_lengths=key_lengths, logit_cap=logit_cap,
                               dropout_rate=dropout_rate, implementation=implementation), None
    if chunk_size == "auto":
        tiles = auto_tiles(T, S) if normalizer in ONLINE_NORMALIZERS else None
    elif chunk_size is not None:
        tiles = (check_int("chunk_size", chunk_size, low=1),) * 2
    else:
        tiles = None
    if tiles is not None and not need_weights:
        out = flash_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer,
                              sink=sink, is_causal=is_causal, window=window, causal_alignment=causal_alignment,
                              query_lengths=query_lengths, key_lengths=key_lengths, logit_cap=logit_cap,
                              dropout_rate=dropout_rate, dropout_key=dropout_key, block_q=tiles[0],
                              block_k=tiles[1])
        return out, None
    return dense_attention(query, key, value, mask, bias=bias, scale=scale, normalizer=normalizer, sink=sink,
                           is_causal=is_causal, window=window, q_offset=q_offset, query_lengths=query_lengths,
                           key_lengths=key_lengths, logit_cap=logit_cap, dropout_rate=dropout_rate,
                           dropout_key=dropout_key)


__all__ = ["dot_product_attention"]
