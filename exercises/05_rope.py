"""Exercise 5 — rotary position embedding (RoPE).          Lesson: positions

Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding".
Instead of adding a code to the embeddings, RoPE rotates each query and key: the
head dim is cut into pairs of channels (2i, 2i+1) and pair i of the vector at
position p is rotated by the angle p * theta_i, with theta_i = base^(-2i / H):

    out[2i]   = x[2i] * cos(p theta_i) - x[2i+1] * sin(p theta_i)
    out[2i+1] = x[2i] * sin(p theta_i) + x[2i+1] * cos(p theta_i)

Rotations compose, so the dot product of a query rotated to position p and a key
rotated to position r depends only on r - p: relative positions for free.

Pairs are *interleaved* channels (2i, 2i+1), the RoFormer convention (tinytf's
apply_rope does the same). Some libraries (GPT-NeoX, Llama's HF port) pair channel
i with i + H/2 instead; that is a different (also valid) layout, not this one.
Use numpy or jax.numpy.
"""

import numpy as np


def apply_rope(x, positions, base=10000.0):
    """Rotate each (2i, 2i+1) channel pair of x by positions * theta_i.

    Args:
      x: (B, T, N, H) queries or keys; H must be even.
      positions: (T,) shared by the batch, or (B, T) per example; integers.
      base: the frequency base (10000 in the paper).

    Returns:
      (B, T, N, H), x rotated as above (the same angle for every head).

    Raises:
      ValueError: if H is odd.
    """
    raise NotImplementedError("Exercise 5: write apply_rope")
