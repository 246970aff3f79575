"""Losses the lessons share: masked cross-entropy and accuracy (computed in float32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# ----------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy over the (masked) positions, computed in float32.

    Args:
      logits: (..., V) unnormalised scores.
      labels: (...) integer class ids in [0, V).
      mask: optional (...) bool or float weights; positions with 0/False do not count.

    Returns:
      Scalar: sum(mask * -log softmax(logits)[labels]) / max(sum(mask), 1).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels have shape {labels.shape}, expected logits.shape[:-1] = "
                         f"{logits.shape[:-1]} (logits {logits.shape})")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return _masked_mean(losses, mask, "cross_entropy")


def accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Fraction of (masked) positions where argmax(logits) equals the label.

    Args:
      logits: (..., V); labels: (...) integers; mask: optional (...) bool or float.

    Returns:
      Scalar in [0, 1].
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels have shape {labels.shape}, expected logits.shape[:-1] = "
                         f"{logits.shape[:-1]} (logits {logits.shape})")
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return _masked_mean(hits, mask, "accuracy")


def _masked_mean(values: jax.Array, mask: jax.Array | None, name: str) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    if mask.shape != values.shape:
        raise ValueError(f"{name}: mask has shape {mask.shape}, expected {values.shape}")
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


