"""Reference for Exercise 8 (exercises/08_entropy.py): attention entropy per head."""

import numpy as np


def attention_entropy(weights, query_mask=None):
    w = np.asarray(weights, np.float64)
    B, N, T, S = w.shape
    plogp = np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0)  # 0 log 0 = 0
    row_entropy = -plogp.sum(axis=-1)  # (B, N, T)
    valid = np.ones((B, T), bool) if query_mask is None else np.broadcast_to(np.asarray(query_mask, bool), (B, T))
    valid = np.broadcast_to(valid[:, None, :], row_entropy.shape)  # (B, N, T)
    return (row_entropy * valid).sum(axis=(0, 2)) / valid.sum(axis=(0, 2))  # (N,)
