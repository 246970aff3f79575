"""Heads with a job: previous-token and induction heads (Olsson et al. 2022).

On a sequence made of two copies of the same L tokens (`tinytf.data.variable_copy_task`:
copy 1 at positions 0..L-1, copy 2 at L..2L-1), two kinds of head do the work:

- a **previous-token head** attends from position i to i - 1;
- an **induction head** attends from a token of the second copy, at L + k, to the token
  that *followed* its first occurrence, at k + 1, and copies it.

Scores (Olsson et al. 2022, "In-context learning and induction heads"), for a head's
map A (rows = queries i, columns = keys j):

    prev(A) = mean_i A[i, i-1]           over rows i = 1 .. 2L-1,
    induction(A) = mean_k A[L+k, k+1]    over k = 0 .. L-1 (the last row's key L is
                                         the second copy's first token).

Uniform causal attention puts 1/(i+1) on each key of row i: its expected score on the
same rows is the chance level `copy_head_scores` reports beside the scores.
"""

from __future__ import annotations

import numpy as np

from tinytf.diagnostics.common import as_layers


def copy_head_scores(maps, lengths) -> dict:
    """Previous-token and induction score of every head on two-copy sequences, with chance levels.

    Args:
      maps: {layer: (B, N, T, T)} causal self-attention maps (from `capture_attention`),
        a list of them or one array; T >= 2 max(lengths).
      lengths: (B,) ints, the copy length L of each sequence.

    Returns:
      {"prev": {layer: (N,)}, "induction": {layer: (N,)}, "prev chance": float,
       "induction chance": float}: mean scores over the valid rows of every sequence,
      and the same means for uniform causal attention.
    """
    lengths = np.asarray(lengths)
    layers = [(name, np.asarray(w)) for name, w in as_layers(maps)]
    B, _, T, S = layers[0][1].shape
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be ({B},) ints (one copy length per sequence), got {lengths.dtype} "
                         f"{lengths.shape}")
    if T != S or lengths.min() < 1 or 2 * lengths.max() > T:
        raise ValueError(f"maps of {T} queries x {S} keys cannot hold two copies of up to {lengths.max()} tokens: "
                         f"expected square maps with T >= 2 max(lengths) and lengths >= 1")
    K = T // 2
    k = np.arange(K)[None]  # (1, K)
    valid = k < lengths[:, None]  # (B, K): second-copy offsets that exist
    prev_valid = np.arange(1, T)[None] < 2 * lengths[:, None]  # (B, T-1): rows 1..2L-1
    rows_ind = np.minimum(lengths[:, None] + k, T - 1)  # (B, K): second-copy positions L + k
    prev, induction = {}, {}
    for name, w in layers:
        w = w.transpose(0, 2, 3, 1)  # (B, T, S, N)
        p = w[np.arange(B)[:, None], np.arange(1, T)[None], np.arange(T - 1)[None]]  # (B, T-1, N): A[i, i-1]
        q = w[np.arange(B)[:, None], rows_ind, k + 1]  # (B, K, N): A[L+k, k+1]
        prev[name] = p[prev_valid].mean(0)  # (N,)
        induction[name] = q[valid].mean(0)
    rows_prev = np.broadcast_to(np.arange(1, T)[None], prev_valid.shape)  # (B, T-1)
    return {"prev": prev, "induction": induction,
            "prev chance": float((1 / (rows_prev + 1.0))[prev_valid].mean()),  # uniform row i: 1/(i+1) per key
            "induction chance": float((1 / (rows_ind + 1.0))[valid].mean())}


__all__ = ["copy_head_scores"]
