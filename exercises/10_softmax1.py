"""Exercise 10 — softmax1, attention that may attend to nothing.   Lesson: attention-sinks

Miller 2023, "Attention is off by one". Softmax weights must sum to 1, so a head
with nothing useful to read still has to put its weight somewhere, often on the
first token (an attention sink). Adding 1 to the denominator lets a row sum to
less than one:

    softmax1(x)_i = exp(x_i) / (1 + sum_j exp(x_j))

It is the ordinary softmax with one extra key of logit 0 and value 0. Compute it
stably: with m = max(0, max_j x_j),

    softmax1(x)_i = exp(x_i - m) / (exp(-m) + sum_j exp(x_j - m)).

Use numpy or jax.numpy.
"""

import numpy as np


def softmax1(x, mask=None):
    """Off-by-one softmax over the last axis.

    Args:
      x: float array (..., S).
      mask: optional bool array broadcastable to x.shape; True = keep. Masked
        entries get weight exactly 0 and take no part in the sum.

    Returns:
      An array of x's shape; each row is non-negative and sums to less than 1
      (a fully masked row is all zeros). Must not overflow for x around 1000.
    """
    raise NotImplementedError("Exercise 10: write softmax1")
