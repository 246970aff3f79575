"""Exercise 6 — splitting and merging heads; multi-head attention.   Lesson: heads

Vaswani et al. 2017, section 3.2.2. A layer of width D runs N attention heads of
width H = D / N side by side: project x to queries, keys and values (D -> D), cut
the last axis into N heads of H features each, attend in every head separately,
glue the heads back together and project once more:

    MHA(x) = merge(attention(split(x W_q), split(x W_k), split(x W_v))) W_o

Head n owns the *contiguous* features [n*H, (n+1)*H) of the projected vector:
split is a reshape of D into (N, H), merge is its exact inverse. A reshape that is
subtly wrong still "trains" on easy tasks, which is why the grader checks it
directly.

You may paste your attention (Exercise 2) here; use numpy or jax.numpy. No biases.
"""

import numpy as np


def split_heads(x, num_heads):
    """(B, T, D) -> (B, T, N, H) with H = D / N; head n gets features [n*H, (n+1)*H).

    Raises:
      ValueError: if D is not divisible by num_heads.
    """
    raise NotImplementedError("Exercise 6: write split_heads")


def merge_heads(x):
    """(B, T, N, H) -> (B, T, N*H): the inverse of split_heads."""
    raise NotImplementedError("Exercise 6: write merge_heads")


def multi_head_attention(x, w_q, w_k, w_v, w_o, num_heads, mask=None):
    """Multi-head self-attention with given weights (no biases).

    Math:  q = split(x @ w_q), k = split(x @ w_k), v = split(x @ w_v)   (B, T, N, H)
           out = merge(softmax(q k^T / sqrt(H), mask) v) @ w_o             (B, T, D)
    The scale is 1/sqrt(H), the width of one head (not of the model).

    Args:
      x: (B, T, D) float.
      w_q, w_k, w_v, w_o: (D, D) float projection matrices (x @ w).
      num_heads: N; D must be divisible by N.
      mask: optional bool array broadcastable to (B, N, T, T), True = may attend.

    Returns:
      (B, T, D).
    """
    raise NotImplementedError("Exercise 6: write multi_head_attention")
