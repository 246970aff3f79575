"""Reference for Exercise 9 (exercises/09_sinks.py): Gu et al.'s sink rate."""

import numpy as np


def sink_rate(maps, eps=0.3, k=0):
    a = np.asarray(maps, np.float64)
    T = a.shape[-1]
    received = a[..., k:, k].sum(axis=-1) / (T - k)  # (L, B, N): mean over the queries i >= k
    return 100.0 * np.mean(received > eps)
