"""Losses the lessons share: masked cross-entropy, accuracy and z-loss (computed in float32)."""

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


def z_loss(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared log-normaliser of the softmax over the last axis (PaLM's z-loss).

    Math: z = log sum_v exp(logits_v); returns mean over (masked) positions of z^2.
    Chowdhery et al. 2022 ("PaLM: Scaling Language Modeling with Pathways") add
    1e-4 * z^2 of the *output* (vocabulary) softmax to the loss, to keep log Z near 0 and
    training stable; it does not touch the attention softmax. Multiply by the weight yourself.

    Args:
      logits: (..., V) unnormalised output scores.
      mask: optional (...) bool or float weights; positions with 0/False do not count.

    Returns:
      Scalar.
    """
    if logits.ndim < 1:
        raise ValueError(f"z_loss: logits must have a class axis, got shape {logits.shape}")
    z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)  # (...)
    return _masked_mean(z**2, mask, "z_loss")


def _masked_mean(values: jax.Array, mask: jax.Array | None, name: str) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    if mask.shape != values.shape:
        raise ValueError(f"{name}: mask has shape {mask.shape}, expected {values.shape}")
    mask = mask.astype(jnp.float32)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


