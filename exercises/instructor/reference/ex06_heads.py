"""Reference for Exercise 6 (exercises/06_heads.py): split/merge heads, multi-head attention."""

import numpy as np


def split_heads(x, num_heads):
    x = np.asarray(x)
    B, T, D = x.shape
    if D % num_heads:
        raise ValueError(f"D={D} is not divisible by num_heads={num_heads}")
    return x.reshape(B, T, num_heads, D // num_heads)  # (B, T, N, H)


def merge_heads(x):
    x = np.asarray(x)
    B, T, N, H = x.shape
    return x.reshape(B, T, N * H)  # (B, T, D)


def _attention(q, k, v, mask):
    H = q.shape[-1]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)  # (B, N, T, S)
    mask = np.broadcast_to(np.ones((), bool) if mask is None else np.asarray(mask, bool), logits.shape)
    m = np.max(np.where(mask, logits, -np.inf), axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(np.where(mask, logits, m) - m), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    weights = e / np.where(total > 0, total, 1.0)
    return np.einsum("bnts,bsnh->btnh", weights, v)  # (B, T, N, H)


def multi_head_attention(x, w_q, w_k, w_v, w_o, num_heads, mask=None):
    x = np.asarray(x, np.float64)
    q = split_heads(x @ w_q, num_heads)  # (B, T, N, H)
    k = split_heads(x @ w_k, num_heads)
    v = split_heads(x @ w_v, num_heads)
    out = merge_heads(_attention(q, k, v, mask))  # (B, T, D)
    return out @ w_o
