"""Is a positional scheme relative? Shift every position and see whether the logits move.

RoPE (Su et al. 2021, "RoFormer") rotates queries and keys by angles proportional to
their positions, so <R(p) q, R(r) k> = <q, R(r - p) k>: adding the same shift to every
position leaves every logit unchanged. An absolute code added to q and k (sinusoids,
Vaswani et al. 2017) has no such property. `position_shift_error` measures it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def position_shift_error(encode: Callable, query, key, shifts: Sequence[int], positions=None) -> np.ndarray:
    """Relative change of the logits when every position is shifted: 0 for a relative scheme.

    Math: e(s) = max |L(p + s) - L(p)| / max |L(p)|, with L(p)_{bnts} = enc(q, p)_t . enc(k, p)_s.

    Args:
      encode: (x (B, T, N, H), positions (T,)) -> encoded x, e.g.
        `tinytf.positional.apply_rope`.
      query, key: (B, T, N, H) queries and keys (the same T positions).
      shifts: the shifts s to try.
      positions: (T,) ints; default 0..T-1.

    Returns:
      (len(shifts),) relative changes.
    """
    q, k = jnp.asarray(query), jnp.asarray(key)
    if q.ndim != 4 or q.shape != k.shape:
        raise ValueError(f"query {tuple(q.shape)} and key {tuple(k.shape)}: expected the same shape (B, T, N, H)")
    positions = jnp.arange(q.shape[1]) if positions is None else jnp.asarray(positions)

    def logits(p):
        return jnp.einsum("btnh,bsnh->bnts", encode(q, p), encode(k, p))  # (B, N, T, S)

    base = logits(positions)
    scale = jnp.abs(base).max()
    return np.asarray([float(jnp.abs(logits(positions + s) - base).max() / scale) for s in shifts])


__all__ = ["position_shift_error"]
