"""Reference for Exercise 11 (exercises/11_ssmax.py): scalable softmax."""

import numpy as np


def scalable_softmax(x, s=1.0, mask=None):
    x = np.asarray(x, np.float64)
    mask = np.ones(x.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
    n = mask.sum(axis=-1, keepdims=True)  # keys each row may see
    z = s * np.log(np.maximum(n, 1)) * x
    m = np.max(np.where(mask, z, -np.inf), axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(mask, np.exp(np.where(mask, z, m) - m), 0.0)
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0)
