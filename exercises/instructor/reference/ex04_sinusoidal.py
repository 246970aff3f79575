"""Reference for Exercise 4 (exercises/04_sinusoidal.py): sinusoidal position encodings."""

import numpy as np


def sinusoidal_encoding(length, dim, base=10000.0):
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    pos = np.arange(length, dtype=np.float64)[:, None]  # (L, 1)
    freq = base ** (-np.arange(0, dim, 2) / dim)  # (dim/2,): base^(-2i/dim)
    angle = pos * freq  # (L, dim/2)
    pe = np.zeros((length, dim))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe
