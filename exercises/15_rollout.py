"""Exercise 15 — attention rollout.                         Lesson: spurious-attention

Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers". The raw
attention of a deep layer says little about the input, because every layer has
already mixed the tokens. Rollout follows the mixing through the layers: average
each layer's attention over heads, add the identity for the residual connection,
renormalise the rows, and multiply the layers together:

    A'_l = rownorm( residual * I + (1 - residual) * mean_n A_l[n] )
    R    = A'_L A'_{L-1} ... A'_1            (the last layer on the left)

Row t of R says how much each input token flows into output token t. The
renormalisation matters when the maps' rows do not sum to 1 (softmax1, sinks).
Use numpy or jax.numpy.
"""

import numpy as np


def attention_rollout(maps, residual=0.5):
    """Attention rollout through L layers.

    Args:
      maps: (L, B, N, T, T) self-attention maps, layer 0 first.
      residual: weight of the identity (0.5 in the paper; 0 = plain product).

    Returns:
      (B, T, T) rollout matrices R.
    """
    raise NotImplementedError("Exercise 15: write attention_rollout")
