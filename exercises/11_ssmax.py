"""Exercise 11 — scalable softmax (SSMax).                 Lesson: dilution

Nakanishi 2025, "Scalable-Softmax Is Superior for Attention". With n keys, the
largest softmax weight shrinks as n grows even when one key clearly wins:
attention "fades" on long inputs. SSMax multiplies the logits by s * log(n):

    ssmax(x)_i = n^(s x_i) / sum_j n^(s x_j) = softmax(s * log(n) * x)_i

where n is the number of keys the row may see (with a mask, the number of True
entries in that row; with a causal mask, row i sees n = i + 1 keys), and s is a
scalar (learned per head in a model; given here). Use the natural log.
Use numpy or jax.numpy.
"""

import numpy as np


def scalable_softmax(x, s=1.0, mask=None):
    """Scalable softmax over the last axis.

    Args:
      x: float array (..., S).
      s: scalar scale.
      mask: optional bool array broadcastable to x.shape; True = keep. Masked
        entries get weight 0 and are not counted in n.

    Returns:
      An array of x's shape; rows sum to 1 (a fully masked row is all zeros).
    """
    raise NotImplementedError("Exercise 11: write scalable_softmax")
