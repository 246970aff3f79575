"""Reference for Exercise 5 (exercises/05_rope.py): rotary position embedding (RoFormer)."""

import numpy as np


def apply_rope(x, positions, base=10000.0):
    x = np.asarray(x, np.float64)
    B, T, N, H = x.shape
    if H % 2:
        raise ValueError(f"RoPE needs an even head dim, got {H}")
    theta = base ** (-np.arange(0, H, 2) / H)  # (H/2,)
    angle = np.asarray(positions, np.float64)[..., None] * theta  # (T, H/2) or (B, T, H/2)
    cos = np.cos(angle)[..., None, :]  # (..., T, 1, H/2): the same angle for every head
    sin = np.sin(angle)[..., None, :]
    even, odd = x[..., 0::2], x[..., 1::2]  # (B, T, N, H/2): the pairs (2i, 2i+1)
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out
