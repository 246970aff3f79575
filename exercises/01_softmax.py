"""Exercise 1 — a stable, masked softmax.            Lesson: attention-basics

Every attention weight in a transformer comes out of a softmax, and almost every
numerical accident in attention starts here: overflow for large logits, NaN for a
row whose keys are all masked. Write it once, carefully.

Use plain numpy or jax.numpy (both are fine; return anything np.asarray accepts).
Do not call a library softmax (jax.nn.softmax, scipy.special.softmax): the point is
to write it. Check your work with `tinytf grade DIR --only 01`.
"""

import numpy as np


def softmax(x, mask=None, axis=-1):
    """Softmax of `x` along `axis`, ignoring entries where `mask` is False.

    Math:  w_i = exp(x_i - m) / sum_j exp(x_j - m),  sums over the entries j that the
    mask keeps, with m = max_j x_j over those entries. Subtracting m changes nothing
    mathematically but keeps exp() from overflowing: x = 1000 must work.

    Args:
      x: float array of any shape, e.g. attention logits (B, N, T, S).
      mask: optional bool array broadcastable to x.shape; True = keep (may attend),
        False = masked out. None keeps everything.
      axis: the axis to normalise over (default: the last one).

    Returns:
      An array of x's shape with, along `axis`:
        - masked entries exactly 0;
        - the kept entries non-negative and summing to 1;
        - a slice with no kept entry at all ("fully masked row"): all zeros, not NaN.
    """
    raise NotImplementedError("Exercise 1: write softmax (stable, masked)")
