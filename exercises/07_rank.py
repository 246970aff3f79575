"""Exercise 7 — measuring rank collapse.                   Lesson: rank-collapse

Dong, Cordonnier & Loukas 2021, "Attention is not all you need: pure attention
loses rank doubly exponentially with depth". Stack self-attention layers without
skip connections and every token's vector converges to the same vector: the
token matrix X (T x D) collapses to rank one, 1 x^T. The lesson measures how far
X is from that with the relative residual

    r(X) = || X - 1 xbar^T ||_F / || X ||_F,   xbar = (1/T) sum_t X[t, :]

where xbar, the mean token, is the rank-one "all rows equal" matrix closest to X
in the Frobenius norm. r = 0 means total collapse. Use numpy or jax.numpy.
"""

import numpy as np


def relative_residual(x):
    """Relative residual of each example's token matrix from its mean token.

    Args:
      x: (B, T, D) token representations.

    Returns:
      (B,) float, r(x[b]) for each example b as defined above.
    """
    raise NotImplementedError("Exercise 7: write relative_residual")
