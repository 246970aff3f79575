"""Rank collapse: do the token representations become identical with depth?

Dong, Cordonnier & Loukas 2021 ("Attention is not all you need: pure attention
loses rank doubly exponentially with depth") show that a stack of self-attention
layers without skip connections or MLPs drives every token to the same vector.
`rank_residual` measures the distance from that rank-1 "token uniformity",
`singular_values` the whole spectrum (the rank-collapse lesson).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _tokens(x, name: str = "x") -> Array:
    x = jnp.asarray(x, dtype=jnp.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected token representations (B, T, D) or (T, D)")
    return x


def _l1inf(m: Array) -> Array:
    """Composite norm sqrt(||M||_1 ||M||_inf) of each (T, D) matrix (Dong et al. 2021)."""
    a = jnp.abs(m)
    norm1 = a.sum(-2).max(-1)  # max column sum
    norm_inf = a.sum(-1).max(-1)  # max row sum
    return jnp.sqrt(norm1 * norm_inf)


def rank_residual(x, *, norm: str = "fro", reference: str = "mean", per_example: bool = False) -> Array:
    """Relative distance of token representations from "all rows identical".

    Math: r(X) = ||X - 1 xbar^T|| / ||X||, xbar = mean over tokens (Dong, Cordonnier
    & Loukas 2021, "Attention is not all you need: pure attention loses rank
    doubly exponentially with depth"). 0 for a rank-1 matrix with
    identical rows, at most 1 with the Frobenius norm. Measure the raw residual
    stream (do not normalise tokens first); at float32 it bottoms out near 1e-7.

    Args:
      x: (B, T, D) or (T, D) token representations.
      norm: "fro" (Frobenius) or "l1inf" (the paper's sqrt(||M||_1 ||M||_inf)).
      reference: "mean" (token mean, the Frobenius minimiser) or "rank1" (best
        rank-1 SVD approximation, as the paper's plotting code).
      per_example: return (B,) instead of the batch mean.

    Returns:
      scalar batch mean of r, or (B,).
    """
    x = _tokens(x)
    if reference == "mean":
        res = x - x.mean(axis=-2, keepdims=True)  # (B, T, D)
    elif reference == "rank1":
        u, s, vt = jnp.linalg.svd(x, full_matrices=False)
        res = x - s[:, :1, None] * u[:, :, :1] * vt[:, :1, :]  # (B, T, D)
    else:
        raise ValueError(f"reference={reference!r}: expected 'mean' or 'rank1'")
    if norm == "fro":
        num, den = jnp.sqrt((res**2).sum((-2, -1))), jnp.sqrt((x**2).sum((-2, -1)))
    elif norm == "l1inf":
        num, den = _l1inf(res), _l1inf(x)
    else:
        raise ValueError(f"norm={norm!r}: expected 'fro' or 'l1inf'")
    r = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)  # (B,) a zero matrix has r = 0
    return r if per_example else r.mean()


def singular_values(x, *, normalize: bool = False) -> Array:
    """Singular-value spectrum of token representations (numerical rank at a glance).

    Args:
      x: (B, T, D) or (T, D).
      normalize: divide each spectrum by its largest value.

    Returns:
      (B, min(T, D)) singular values in decreasing order (Dong et al. 2021).
    """
    s = jnp.linalg.svd(_tokens(x), compute_uv=False)  # (B, min(T, D))
    if normalize:
        s = s / jnp.maximum(s[:, :1], jnp.finfo(s.dtype).tiny)
    return s
