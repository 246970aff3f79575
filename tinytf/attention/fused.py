"""Fused attention on a GPU: hand the computation to cuDNN through `jax.nn.dot_product_attention`.

Guarded: only where cuDNN computes exactly what tinytf would (GPU, bfloat16/float16,
plain softmax, no sink, no soft-capping); anything else is a clear error, never a
silent change of maths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinytf.attention.masks import window_bounds

Array = jax.Array


def cudnn_supported(query: Array, normalizer="softmax", sink=None, bias=None, logit_cap=None) -> bool:
    """True if `implementation="cudnn"` can run this call: GPU, bf16/fp16, plain softmax, no sink or cap."""
    try:
        on_gpu = jax.default_backend() == "gpu"
    except RuntimeError:
        on_gpu = False
    return (on_gpu and query.dtype in (jnp.bfloat16, jnp.float16)
            and normalizer == "softmax" and sink is None and logit_cap is None)


def fused_attention(query, key, value, mask, *, bias, scale, normalizer, sink, is_causal, causal_alignment,
                    window, query_lengths, key_lengths, logit_cap, dropout_rate, implementation) -> Array:
    """Hand off to jax.nn.dot_product_attention's cuDNN kernel (GPU only, guarded).

    jax.nn aligns causal masks and windows top-left; a bottom-right causal or windowed
    call with T != S is refused rather than silently computed the other way.
    """
    if implementation != "cudnn":
        raise ValueError(f"implementation must be None or 'cudnn', got {implementation!r}")
    if not cudnn_supported(query, normalizer, sink, bias, logit_cap) or dropout_rate:
        raise ValueError(
            "implementation='cudnn' needs a GPU, bfloat16/float16 inputs, normalizer='softmax', no sink, no "
            f"logit_cap and no dropout; got backend={jax.default_backend()!r}, dtype={query.dtype}, "
            f"normalizer={normalizer!r}, sink={'set' if sink is not None else None}, logit_cap={logit_cap}, "
            f"dropout_rate={dropout_rate}")
    T, S = query.shape[1], key.shape[1]
    bounds = window_bounds(window)
    causal = is_causal or (bounds is not None and bounds[2])
    if (causal or bounds is not None) and causal_alignment == "bottom_right" and T != S:
        raise ValueError(
            f"implementation='cudnn' aligns causal masks and windows top-left (query i at key i), but this call "
            f"asks for causal_alignment='bottom_right' with T={T} != S={S}: pass causal_alignment='top_left' if "
            "that is what you mean, or use implementation=None")
    local = None if bounds is None else (bounds[0], 0 if causal else bounds[1])
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=causal, local_window_size=local,
        query_seq_lengths=query_lengths, key_value_seq_lengths=key_lengths, implementation="cudnn")


__all__ = ["cudnn_supported", "fused_attention"]
