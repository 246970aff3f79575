"""Exercise 3 — causal and padding masks.                  Lesson: attention-basics

Masks say which keys a query may attend to. In tinytf a mask is a boolean array,
True = may attend, broadcastable to the weights' shape (B, N, T, S).

  - A causal mask stops a language model from looking at the future: the query at
    position i sees only keys at positions j <= i.
  - A padding mask hides the padding at the end of shorter sequences in a batch:
    key j of example b is real iff j < lengths[b].

Use numpy or jax.numpy. Return booleans (comparisons), not 0/1 numbers.
"""

import numpy as np


def causal_mask(T, S=None):
    """Causal mask for T queries and S keys (S defaults to T; S >= T).

    When S > T, the queries are the *last* T of the S positions (as when a model
    decodes new tokens after S - T cached ones): query i sits at position i + S - T
    and may see keys j <= i + S - T.

    Args:
      T: number of queries.
      S: number of keys (default T).

    Returns:
      (1, 1, T, S) bool; entry [0, 0, i, j] is True iff j <= i + S - T.
    """
    raise NotImplementedError("Exercise 3: write causal_mask")


def padding_mask(lengths, S):
    """Key padding mask from sequence lengths.

    Args:
      lengths: (B,) int, the number of real (non-padding) tokens in each sequence.
      S: the padded length.

    Returns:
      (B, 1, 1, S) bool; entry [b, 0, 0, j] is True iff j < lengths[b]. The two
      singleton axes broadcast over heads and queries: padding keys are hidden
      from every query.
    """
    raise NotImplementedError("Exercise 3: write padding_mask")
