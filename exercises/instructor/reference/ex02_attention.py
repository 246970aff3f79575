"""Reference for Exercise 2 (exercises/02_attention.py): scaled dot-product attention."""

import numpy as np


def _softmax(x, mask):
    mask = np.broadcast_to(mask, x.shape)
    m = np.max(np.where(mask, x, -np.inf), axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(np.where(mask, x, m) - m), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0)


def scaled_dot_product_attention(query, key, value, mask=None):
    q, k, v = (np.asarray(a, np.float64) for a in (query, key, value))
    H = q.shape[-1]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)  # (B, N, T, S)
    if mask is None:
        mask = np.ones(logits.shape, bool)
    weights = _softmax(logits, np.asarray(mask, bool))  # (B, N, T, S)
    out = np.einsum("bnts,bsnh->btnh", weights, v)  # (B, T, N, H)
    return out, weights
