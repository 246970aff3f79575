"""Exercise 8 — attention entropy.                         Lesson: entropy-collapse

Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention
Entropy Collapse". When training goes unstable, attention logits blow up and the
attention rows become one-hot: their entropy falls to zero. The lesson tracks,
per head, the entropy of each attention row averaged over queries and examples:

    Ent_n = mean over (b, t) with query_mask[b, t] of  - sum_s w[b, n, t, s] log w[b, n, t, s]

in nats (natural log), with 0 log 0 = 0 (masked keys have weight exactly 0).
A uniform row over S keys has entropy log S, a one-hot row 0.
Use numpy or jax.numpy.
"""

import numpy as np


def attention_entropy(weights, query_mask=None):
    """Mean attention entropy per head.

    Args:
      weights: (B, N, T, S) attention weights (rows sum to 1; may contain exact 0s).
      query_mask: optional (B, T) bool, False = padding query, left out of the mean.
        None counts every query.

    Returns:
      (N,) float: each head's entropy averaged over the batch and the counted queries.
    """
    raise NotImplementedError("Exercise 8: write attention_entropy")
