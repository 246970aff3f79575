"""Exercise 9 — the attention sink rate.                   Lesson: attention-sinks

Xiao et al. 2023 (StreamingLLM) noticed that language models pour a large share of
their attention onto the first token, whatever it is: an "attention sink". Gu et
al. 2024, "When Attention Sink Emerges in Language Models: An Empirical View",
measure how often it happens. For a causal attention map A (T x T) of one layer,
one head and one example, the score of key k is the mean attention it receives
from the queries that can see it (queries i >= k):

    alpha_k = (1 / (T - k)) * sum_{i = k}^{T-1} A[i, k]

and the sink rate is the percentage of (layer, example, head) maps whose score
exceeds a threshold eps (0.3 in the paper):

    Sink_k^eps = 100 * mean over (l, b, n) of 1[alpha_k > eps]

Use numpy or jax.numpy.
"""

import numpy as np


def sink_rate(maps, eps=0.3, k=0):
    """Gu et al.'s sink rate of key k, in percent.

    Args:
      maps: (L, B, N, T, T) causal attention maps of L layers (rows sum to 1;
        A[i, j] = 0 for j > i).
      eps: threshold on alpha_k.
      k: the key position whose sink-ness is measured (0 = the first token).

    Returns:
      A float in [0, 100].
    """
    raise NotImplementedError("Exercise 9: write sink_rate")
