"""Fused attention on a GPU: hand the computation to cuDNN through `jax.nn.dot_product_attention`.

Guarded: only where cuDNN computes exactly what tinytf would (GPU, bfloat16/float16,
plain softmax, no sink, no soft-capping); anything else is a clear error, never a
silent change of maths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def cudnn_supported(query: Array, normalizer, sink, bias, logit_cap=None) -> bool:
    """True if `implementation="cudnn"` can run this call: GPU, bf16/fp16, plain softmax, no sink or cap."""
    try:
        on_gpu = jax.default_backend() == "gpu"
    except RuntimeError:
        on_gpu = False
    return (on_gpu and query.dtype in (jnp.bfloat16, jnp.float16)
            and normalizer == "softmax" and sink is None and logit_cap is None)


def fused_attention(query, key, value, mask, bias, scale, normalizer, sink, is_causal, window, logit_cap,
                    implementation) -> Array:
    """Hand off to jax.nn.dot_product_attention's cuDNN kernel (GPU only, guarded)."""
    if implementation != "cudnn":
        raise ValueError(f"implementation must be None or 'cudnn', got {implementation!r}")
    if not cudnn_supported(query, normalizer, sink, bias, logit_cap):
        raise ValueError(
            "implementation='cudnn' needs a GPU, bfloat16/float16 inputs, normalizer='softmax', no sink and no "
            f"logit_cap; got backend={jax.default_backend()!r}, dtype={query.dtype}, normalizer={normalizer!r}, "
            f"sink={'set' if sink is not None else None}, logit_cap={logit_cap}")
    window_size = None if window is None else (window - 1, 0)
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal or window is not None,
        local_window_size=window_size, implementation="cudnn")


__all__ = ["cudnn_supported", "fused_attention"]
