"""Attention masks: which keys each query may see.

Masks are boolean, True = may attend, broadcastable to (B, N, T, S): B batch, N heads,
T queries, S keys. When S > T the queries are the *last* T of S positions (decoding
with a cache), so query i sits at absolute position i + S - T.

Reading order: `causal_mask`, `sliding_window_mask`, `padding_mask`, `combine_masks`,
then `structured_mask` (the causal/window pattern for one block of keys, built on the
fly by the attention paths so that an (S, S) mask never has to exist) and
`visible_key_count` (how many keys a query sees: scalable softmax and sigmoid need it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def causal_mask(T: int, S: int | None = None) -> Array:
    """Causal mask: query i may attend to keys j <= i (+ S - T when S > T).

    When S > T the queries are the *last* T positions of a length-S sequence
    (decoding with a cache), so query i sits at absolute position i + S - T.

    Returns:
      (1, 1, T, S) bool.
    """
    S = T if S is None else S
    offset = S - T
    q = jnp.arange(T)[:, None] + offset  # (T, 1) absolute query positions
    k = jnp.arange(S)[None, :]  # (1, S)
    return (k <= q)[None, None]


def padding_mask(lengths: Array, S: int) -> Array:
    """Key padding mask from sequence lengths: key j is valid iff j < lengths[b].

    Args:
      lengths: (B,) int, number of valid keys per sequence.
      S: padded key length.

    Returns:
      (B, 1, 1, S) bool.
    """
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape (B,), got {lengths.shape}")
    return (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]


def sliding_window_mask(T: int, window: int, S: int | None = None) -> Array:
    """Causal sliding window (Longformer / Mistral): query i sees keys i-window+1 .. i.

    Returns:
      (1, 1, T, S) bool.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    S = T if S is None else S
    q = jnp.arange(T)[:, None] + (S - T)  # (T, 1) absolute query positions
    k = jnp.arange(S)[None, :]
    return ((k <= q) & (k > q - window))[None, None]


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of masks (None entries are ignored); None if all are None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


def structured_mask(T: int, q_offset: int, k_start, size: int, is_causal: bool,
                    window: int | None) -> Array | None:
    """The causal / sliding-window pattern for queries 0..T-1 and keys k_start..k_start+size-1.

    Queries sit at absolute positions q_offset + i; `k_start` may be traced (a block
    index inside a scan). A window here is always causal. None when neither applies.

    Returns:
      (1, 1, T, size) bool, or None.
    """
    if not is_causal and window is None:
        return None
    q = jnp.arange(T)[:, None] + q_offset  # (T, 1) absolute positions
    k = k_start + jnp.arange(size)[None, :]  # (1, size)
    ok = k <= q
    if window is not None:
        ok &= k > q - window
    return ok[None, None]  # (1, 1, T, size)


def broadcast_keys(x: Array, S: int) -> Array:
    """Give a (..., 1 or S) mask or bias rank 4 and a full key axis of length S."""
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.broadcast_to(x, x.shape[:-1] + (S,))


def visible_key_count(mask: Array | None, shape: tuple[int, int, int, int], *, is_causal: bool = False,
                      window: int | None = None) -> Array:
    """Number of keys each query may see, (B, N, T, 1) float32.

    Without an explicit mask the count comes from the causal / window pattern alone, so no
    (T, S) array is formed.

    Args:
      mask: optional bool, broadcastable to shape (B, N, T, S).
      shape: (B, N, T, S).
      is_causal, window: the structured pattern (queries are the last T of S positions).
    """
    B, N, T, S = shape
    if mask is None:
        q = jnp.arange(T) + (S - T)  # absolute query positions
        n = jnp.full((T,), float(S))
        if is_causal or window is not None:
            n = (q + 1).astype(jnp.float32)
        if window is not None:
            n = jnp.minimum(n, float(window))
        return jnp.broadcast_to(n[None, None, :, None], (B, N, T, 1))
    full = combine_masks(broadcast_keys(mask, S), structured_mask(T, S - T, 0, S, is_causal, window))
    return jnp.sum(jnp.broadcast_to(full, (B, N, T, S)), axis=-1, keepdims=True).astype(jnp.float32)


__all__ = ["causal_mask", "padding_mask", "sliding_window_mask", "combine_masks", "structured_mask",
           "broadcast_keys", "visible_key_count"]
