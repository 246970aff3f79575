"""The KV cache: what incremental decoding keeps of the past, and where.

`KVCache` holds one attention layer's keys and values in C slots; `CachePolicy`
decides which token lives in which slot and at which position. The policy follows
StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with Attention
Sinks"): keep the first `sink_tokens` tokens for ever plus a sliding window of the most
recent ones, and give every cached token its position *inside the cache*.

Keys are stored *before* RoPE, so a slot's position can change between steps; the
attention layer rotates them at their current positions (see
`tinytf.nn.MultiHeadAttention`, which takes `cache=`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class KVCache(NamedTuple):
    """One attention layer's key/value cache: C slots of keys and values, (B, C, N, H) each.

    Which token sits in which slot, and at which position, is the caller's policy
    (`CachePolicy`); the layer only writes slots and attends over them.
    """

    keys: Array
    values: Array

    @classmethod
    def zeros(cls, batch_size: int, size: int, num_heads: int, head_dim: int, dtype=jnp.float32) -> "KVCache":
        """An empty cache of `size` slots."""
        shape = (batch_size, size, num_heads, head_dim)  # (B, C, N, H)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def write(self, slots: Array, keys: Array, values: Array) -> "KVCache":
        """The cache with T new keys/values (B, T, N, H) written into `slots` (T,)."""
        return KVCache(self.keys.at[:, slots].set(keys.astype(self.keys.dtype)),
                       self.values.at[:, slots].set(values.astype(self.values.dtype)))


@dataclass(frozen=True, kw_only=True)
class CachePolicy:
    """Which token lives in which KV-cache slot, at which position (StreamingLLM, Xiao et al. 2023).

    The cache has `size` = C slots. Slots 0..sinks-1 keep the first tokens for ever
    (the "attention sinks"); the other C - sinks slots are a ring buffer of the most
    recent tokens: token t >= sinks goes to slot sinks + (t - sinks) % window.

    Positions are cache-relative by default: once the cache is full, the cached tokens
    ordered [sinks..., recent...] get positions 0..C-1, so no position ever exceeds
    C - 1. Inside the recent window that keeps the offsets between tokens (RoPE and
    ALiBi only see offsets); only the sinks move closer. relative=False uses the
    positions in the original text.
    """

    size: int
    """C, the number of slots."""
    sinks: int
    """Slots that keep the first tokens (min(sink_tokens, C))."""
    window: int
    """Length of the ring of recent tokens (for window=None: the whole sequence)."""
    relative: bool = True

    @classmethod
    def make(cls, length: int, *, window: int | None = None, sink_tokens: int = 0,
             relative: bool = True) -> "CachePolicy":
        """The policy for a stream of `length` tokens keeping `sink_tokens` + the last `window`."""
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise ValueError(f"window must be a positive int or None, got {window!r}")
        if not isinstance(sink_tokens, int) or isinstance(sink_tokens, bool) or sink_tokens < 0:
            raise ValueError(f"sink_tokens must be an int >= 0, got {sink_tokens!r}")
        ring = length if window is None else window
        size = min(length, sink_tokens + ring)
        return cls(size=size, sinks=min(sink_tokens, size), window=ring, relative=bool(relative))

    def slots(self, t: Array) -> Array:
        """Slot of token t (any int array shape)."""
        return jnp.where(t < self.sinks, t, self.sinks + (t - self.sinks) % self.window)

    def contents(self, t: Array) -> tuple[Array, Array]:
        """After token t (scalar) is written: each slot's token index (C,) and whether it holds one (C,)."""
        s = jnp.arange(self.size)
        ring = t - (t - s) % self.window  # latest t' <= t with slot(t') = s  (s >= sinks)
        index = jnp.where(s < self.sinks, s, ring)
        valid = jnp.where(s < self.sinks, s <= t, ring >= self.sinks)
        return index, valid

    def positions(self, t: Array, index: Array) -> tuple[Array, Array]:
        """Positions of the queries t (T,) and of the slots' tokens `index` (C,).

        Uses the shift of the last query; a parallel step never evicts (all shifts are 0).
        """
        if not self.relative:
            return t, index
        shift = jnp.maximum(0, t[-1] - (self.size - 1))  # how far the ring has moved past a full cache
        return t - shift, jnp.where(jnp.arange(self.size) < self.sinks, index, index - shift)

    def step(self, t0, T: int) -> tuple[Array, Array, Array, Array]:
        """Where T new tokens at text positions t0..t0+T-1 go, and what they may see.

        T > 1 only while nothing is evicted (t0 + T <= C): then one parallel step is
        exactly T single steps.

        Returns:
          slots (T,) to write, the new tokens' positions (T,), every slot's position
          (C,), and the mask (T, C): True where a new token may attend to a slot.
        """
        t = t0 + jnp.arange(T)  # (T,) text positions
        index, valid = self.contents(t[-1])  # (C,), (C,)
        q_pos, k_pos = self.positions(t, index)  # (T,), (C,)
        mask = valid[None, :] & (index[None, :] <= t[:, None])  # (T, C) causal over the cache
        return self.slots(t), q_pos, k_pos, mask


__all__ = ["KVCache", "CachePolicy"]
