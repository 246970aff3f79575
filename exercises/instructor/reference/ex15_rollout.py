"""Reference for Exercise 15 (exercises/15_rollout.py): attention rollout."""

import numpy as np


def attention_rollout(maps, residual=0.5):
    a = np.asarray(maps, np.float64)
    L, B, N, T, _ = a.shape
    rollout = np.broadcast_to(np.eye(T), (B, T, T))
    for layer in range(L):
        mixed = residual * np.eye(T) + (1 - residual) * a[layer].mean(axis=1)  # (B, T, T)
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)  # rows sum to one again
        rollout = mixed @ rollout  # later layers multiply on the left
    return rollout
