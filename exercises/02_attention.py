"""Exercise 2 — scaled dot-product attention with masks.   Lesson: attention-basics

Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(H)) V

Each query compares itself with every key (a dot product), the comparison is
scaled by 1/sqrt(H) so that the logits do not grow with the head dim, a softmax
over the keys turns each query's row of logits into weights, and the output is the
weighted average of the values.

Layout (tinytf's, the same as jax.nn.dot_product_attention): B batch, T queries,
S keys, N heads, H head dim. You may paste your softmax from Exercise 1 into this
file. Use numpy or jax.numpy; do not call a library attention function.
"""

import numpy as np


def scaled_dot_product_attention(query, key, value, mask=None):
    """Multi-head scaled dot-product attention (the heads are already split).

    Math:  logits[b, n, t, s] = sum_h query[b, t, n, h] * key[b, s, n, h] / sqrt(H)
           weights = softmax over s of logits, keeping only keys where mask is True
           out[b, t, n, h] = sum_s weights[b, n, t, s] * value[b, s, n, h]

    Args:
      query: (B, T, N, H) float.
      key:   (B, S, N, H) float.
      value: (B, S, N, H) float.
      mask: optional bool array broadcastable to (B, N, T, S); True = may attend.
        E.g. (B, 1, 1, S) for key padding, (1, 1, T, S) for a causal mask.

    Returns:
      (out, weights): out (B, T, N, H); weights (B, N, T, S), each row
      weights[b, n, t, :] sums to 1 over the keys it may see. A query whose keys are
      all masked gets zero weights and a zero output (not NaN).
    """
    raise NotImplementedError("Exercise 2: write scaled_dot_product_attention")
