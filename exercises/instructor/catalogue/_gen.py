"""Input generators shared by the catalogue: odd, distinct sizes and valid masks."""

from __future__ import annotations

import numpy as np


def normal(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    """float32 N(0, scale^2) samples."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def distinct(rng: np.random.Generator, k: int, choices=(2, 3, 5, 7, 11)) -> list[int]:
    """k distinct sizes drawn from `choices`, so that no two axes can be confused."""
    return [int(v) for v in rng.choice(choices, size=k, replace=False)]


def key_mask(rng: np.random.Generator, shape, p: float = 0.6, empty_rows: int = 0) -> np.ndarray:
    """Random bool mask (True = keep), at least one True per last-axis row, then
    `empty_rows` rows set entirely False (fully masked)."""
    m = rng.random(shape) < p
    flat = m.reshape(-1, shape[-1])
    for row in flat:
        if not row.any():
            row[rng.integers(shape[-1])] = True
    if empty_rows:
        for r in rng.choice(flat.shape[0], size=empty_rows, replace=False):
            flat[r] = False
    return flat.reshape(shape)


def causal(T: int, S: int | None = None) -> np.ndarray:
    """(1, 1, T, S) bool: query i sees keys j <= i + S - T."""
    S = T if S is None else S
    return (np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T))[None, None]


def softmax_rows(logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Masked softmax over the last axis in float64 (for building attention maps)."""
    x = logits.astype(np.float64)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    total = e.sum(-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0)
