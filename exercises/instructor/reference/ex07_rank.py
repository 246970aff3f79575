"""Reference for Exercise 7 (exercises/07_rank.py): the rank-collapse residual."""

import numpy as np


def relative_residual(x):
    x = np.asarray(x, np.float64)
    mean_token = x.mean(axis=1, keepdims=True)  # (B, 1, D): the best rank-1 "all rows equal" fit
    residual = np.sqrt(np.sum((x - mean_token) ** 2, axis=(1, 2)))  # (B,)
    return residual / np.sqrt(np.sum(x**2, axis=(1, 2)))
