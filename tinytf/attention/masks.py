"""Attention masks: which keys each query may see.

Masks are boolean, True = may attend, broadcastable to (B, N, T, S): B batch, N heads,
T queries, S keys.

**Alignment when T != S.** A causal mask needs to know where the queries sit among
the keys. tinytf's default, "bottom_right", aligns the *last* query with the *last*
key: the queries are the last T of S positions, query i at position i + S - T. That is
what decoding with a KV cache needs. `jax.nn.dot_product_attention` and PyTorch's
`scaled_dot_product_attention(is_causal=True)` align "top_left": query i at position i.
The two agree when T == S. Every mask here, and every attention path, takes the same
`alignment` argument.

**Windows.** An int `window` W is the causal sliding window of Longformer / Mistral:
query i sees its last W keys (itself included), and it implies causal masking. A pair
`(left, right)` is jax.nn's two-sided `local_window_size`: query i sees keys
i - left .. i + right (for encoders: ViT, DETR), and implies nothing else.

Reading order: `causal_mask`, `sliding_window_mask`, `local_window_mask`,
`padding_mask`, `length_mask`, `combine_masks`; then the pieces the attention paths
build on the fly so that no (T, S) mask ever has to exist: `structured_mask` (the
causal/window pattern for one block of keys), `lengths_block_mask`, and
`visible_key_count` (how many keys a query sees: scalable softmax and sigmoid need it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tinytf.checks import check_int

Array = jax.Array

ALIGNMENTS = ("bottom_right", "top_left")


def query_offset(T: int, S: int, alignment: str = "bottom_right") -> int:
    """Position of query 0 among the keys: S - T ("bottom_right", tinytf's default) or 0 ("top_left")."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"causal_alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    return S - T if alignment == "bottom_right" else 0


def window_bounds(window) -> tuple[int, int, bool] | None:
    """A window argument -> (left, right, implies_causal), or None for no window.

    int W >= 1: the causal window of W keys, (W - 1, 0, True); a pair (left, right) of
    ints >= 0: the two-sided window, (left, right, False).
    """
    if window is None:
        return None
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise ValueError(f"window must be an int (causal window) or a pair (left, right), got {window!r}")
        left = check_int("window[0] (left)", window[0], low=0)
        right = check_int("window[1] (right)", window[1], low=0)
        return left, right, False
    width = check_int("window", window, low=1)
    return width - 1, 0, True


def _lengths(T: int, S: int | None) -> tuple[int, int]:
    T = check_int("T", T, low=1)
    S = T if S is None else check_int("S", S, low=1)
    return T, S


def causal_mask(T: int, S: int | None = None, *, alignment: str = "bottom_right") -> Array:
    """Causal mask: query i may attend to keys j <= i + offset (see the module docstring).

    Returns:
      (1, 1, T, S) bool.
    """
    T, S = _lengths(T, S)
    q = jnp.arange(T)[:, None] + query_offset(T, S, alignment)  # (T, 1) query positions among the keys
    k = jnp.arange(S)[None, :]  # (1, S)
    return (k <= q)[None, None]


def sliding_window_mask(T: int, window: int, S: int | None = None, *, alignment: str = "bottom_right") -> Array:
    """Causal sliding window (Longformer / Mistral): query i sees keys i-window+1 .. i.

    Returns:
      (1, 1, T, S) bool.
    """
    window = check_int("window", window, low=1)
    T, S = _lengths(T, S)
    q = jnp.arange(T)[:, None] + query_offset(T, S, alignment)  # (T, 1) query positions
    k = jnp.arange(S)[None, :]
    return ((k <= q) & (k > q - window))[None, None]


def local_window_mask(T: int, left: int, right: int, S: int | None = None, *,
                      alignment: str = "bottom_right") -> Array:
    """Two-sided local window (jax.nn's local_window_size): query i sees keys i-left .. i+right.

    Returns:
      (1, 1, T, S) bool.
    """
    left, right, _ = window_bounds((left, right))
    T, S = _lengths(T, S)
    q = jnp.arange(T)[:, None] + query_offset(T, S, alignment)
    k = jnp.arange(S)[None, :]
    return ((k >= q - left) & (k <= q + right))[None, None]


def padding_mask(lengths: Array, S: int) -> Array:
    """Key padding mask from sequence lengths: key j is valid iff j < lengths[b].

    Args:
      lengths: (B,) int, number of valid keys per sequence.
      S: padded key length.

    Returns:
      (B, 1, 1, S) bool.
    """
    S = check_int("S", S, low=1)
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1 or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be a (B,) integer array, got shape {lengths.shape}, dtype {lengths.dtype}")
    return (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]


def length_mask(query_lengths: Array | None, key_lengths: Array | None, T: int, S: int) -> Array | None:
    """Per-example padding from lengths (jax.nn's query_seq_lengths / key_value_seq_lengths).

    Query i of example b is valid iff i < query_lengths[b], key j iff j < key_lengths[b].

    Returns:
      (B, 1, T, S) bool, or None when both are None.
    """
    return lengths_block_mask(query_lengths, key_lengths, T, 0, S)


def lengths_block_mask(query_lengths: Array | None, key_lengths: Array | None, T: int, k_start, size: int,
                       q_start=0) -> Array | None:
    """`length_mask` for queries q_start .. q_start+T-1 and keys k_start .. k_start+size-1 (starts may be
    traced): (B, 1, T, size) or None."""
    mask = None
    if query_lengths is not None:
        mask = (q_start + jnp.arange(T)[None, :] < query_lengths[:, None])[:, None, :, None]  # (B, 1, T, 1)
    if key_lengths is not None:
        k = (k_start + jnp.arange(size)[None, :] < key_lengths[:, None])[:, None, None, :]  # (B, 1, 1, size)
        mask = k if mask is None else mask & k
    return mask


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of masks (None entries are ignored); None if all are None."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out


def structured_mask(T: int, q_offset: int, k_start, size: int, is_causal: bool, window) -> Array | None:
    """The causal / window pattern for queries 0..T-1 and keys k_start..k_start+size-1.

    Queries sit at positions q_offset + i among the keys (see `query_offset`); `k_start`
    may be traced (a block index inside a scan). `window` is as `window_bounds` reads it.

    Returns:
      (1, 1, T, size) bool, or None when neither applies.
    """
    bounds = window_bounds(window)
    if not is_causal and bounds is None:
        return None
    q = jnp.arange(T)[:, None] + q_offset  # (T, 1) query positions
    k = k_start + jnp.arange(size)[None, :]  # (1, size)
    if bounds is None:
        return (k <= q)[None, None]
    left, right, causal = bounds
    if is_causal or causal:
        right = 0
    return ((k >= q - left) & (k <= q + right))[None, None]  # (1, 1, T, size)


def broadcast_keys(x: Array, S: int) -> Array:
    """Give a (..., 1 or S) mask or bias rank 4 and a full key axis of length S."""
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.broadcast_to(x, x.shape[:-1] + (S,))


def visible_key_count(mask: Array | None, shape: tuple[int, int, int, int], *, is_causal: bool = False,
                      window=None, q_offset: int | None = None, query_lengths: Array | None = None,
                      key_lengths: Array | None = None) -> Array:
    """Number of keys each query may see, (B, N, T, 1) float32.

    Without an explicit mask or lengths the count comes from the causal / window pattern
    alone, so no (T, S) array is formed.

    Args:
      mask: optional bool, broadcastable to shape (B, N, T, S).
      shape: (B, N, T, S).
      is_causal, window: the structured pattern; q_offset: query 0's position among the
        keys (default S - T, bottom-right alignment).
      query_lengths, key_lengths: optional (B,) per-example lengths.
    """
    B, N, T, S = shape
    q_offset = S - T if q_offset is None else q_offset
    if mask is None and query_lengths is None and key_lengths is None:
        q = jnp.arange(T) + q_offset  # query positions among the keys
        lo, hi = jnp.zeros((T,)), jnp.full((T,), float(S - 1))  # the first and last visible key
        bounds = window_bounds(window)
        if is_causal or (bounds is not None and bounds[2]):
            hi = jnp.minimum(hi, q)
        if bounds is not None:
            lo = jnp.maximum(lo, q - bounds[0])
            if not bounds[2]:
                hi = jnp.minimum(hi, q + bounds[1])
        n = jnp.maximum(hi - lo + 1, 0.0).astype(jnp.float32)
        return jnp.broadcast_to(n[None, None, :, None], (B, N, T, 1))
    full = combine_masks(None if mask is None else broadcast_keys(mask, S),
                         structured_mask(T, q_offset, 0, S, is_causal, window),
                         length_mask(query_lengths, key_lengths, T, S))
    return jnp.sum(jnp.broadcast_to(full, (B, N, T, S)), axis=-1, keepdims=True).astype(jnp.float32)


__all__ = ["ALIGNMENTS", "query_offset", "window_bounds", "causal_mask", "sliding_window_mask",
           "local_window_mask", "padding_mask", "length_mask", "lengths_block_mask", "combine_masks",
           "structured_mask", "broadcast_keys", "visible_key_count"]
