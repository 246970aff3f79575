"""The small pieces every diagnostic shares: reading attention maps, masks, p log p, cosine.

Attention maps arrive as one (B, N, T, S) array, a list of them, a stacked (L, B, N, T, S)
array, or the dict {layer_name: weights} from `tinytf.capture.capture_attention`;
`as_layers` turns any of these into [(name, weights)] with a clear error otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def as_weights(weights, name: str = "weights") -> Array:
    """Check that `weights` is a 4-D attention map (B, N, T, S)."""
    w = jnp.asarray(weights)
    if w.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(w.shape)}: expected attention weights (B, N, T, S)")
    return w


def as_layers(maps, name: str = "maps", layers=None) -> list[tuple[str, Array]]:
    """A dict {name: (B,N,T,S)}, a list of (B,N,T,S) or one (B,N,T,S) array -> [(name, weights)].

    `layers`, a list of names, selects and orders the layers (an unknown name is an error).
    """
    if isinstance(maps, Mapping):
        items = list(maps.items())
    elif isinstance(maps, (list, tuple)):
        items = [(str(i), m) for i, m in enumerate(maps)]
    else:
        arr = jnp.asarray(maps)
        if arr.ndim == 5:  # (L, B, N, T, S) stacked layers
            items = [(str(i), arr[i]) for i in range(arr.shape[0])]
        else:
            items = [("0", arr)]
    if not items:
        raise ValueError(f"{name} is empty: expected at least one attention map")
    items = [(str(k), as_weights(v, f"{name}[{k!r}]")) for k, v in items]
    if layers is None:
        return items
    lookup = dict(items)
    missing = [n for n in layers if n not in lookup]
    if missing:
        raise ValueError(f"layers {missing} not in {name}: available {list(lookup)}")
    return [(n, lookup[n]) for n in layers]


def broadcast_mask(mask, shape: tuple[int, ...], name: str = "mask") -> Array:
    """Broadcast a boolean mask to `shape`, with an error naming both shapes."""
    mask = jnp.asarray(mask, dtype=bool)
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}: not broadcastable to the weights' shape {shape}") from None
    return jnp.broadcast_to(mask, shape)


def xlogx(p: Array) -> Array:
    """p log p with 0 log 0 = 0 and finite gradients at 0."""
    safe = jnp.where(p > 0, p, 1.0)
    return jnp.where(p > 0, p * jnp.log(safe), 0.0)


def cosine(a: Array, b: Array, axis: int = -1) -> Array:
    """Cosine similarity along `axis` (0 where either vector is zero)."""
    na = jnp.sqrt((a * a).sum(axis))
    nb = jnp.sqrt((b * b).sum(axis))
    return (a * b).sum(axis) / jnp.maximum(na * nb, 1e-12)


__all__ = ["as_weights", "as_layers", "broadcast_mask", "xlogx", "cosine"]
