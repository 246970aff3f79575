"""Why attention divides the logits by sqrt(d), and why it ignores the order of its inputs.

Vaswani et al. 2017 ("Attention is all you need", section 3.2.1): the dot product of
a query and a key whose d entries are independent with mean 0 and variance 1 has
variance d. Unscaled, the logits of a head grow like sqrt(d), the softmax saturates
(one weight near 1, entropy near 0) and its Jacobian, the gradient that reaches the
logits, vanishes. `normalizer_row_stats` measures a normaliser's rows;
`logit_scale_sweep` draws random queries and keys for a range of d and measures them
with and without the 1/sqrt(d) scale.

Without positional information attention is permutation equivariant: permute the
tokens and the outputs come back permuted the same way.
`permutation_equivariance_error` measures how far a function is from that.

Reading order: `normalizer_row_stats`, `logit_scale_sweep`, `permutation_equivariance_error`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@functools.partial(jax.jit, static_argnums=1)
def _row_stats(logits: Array, normalizer: Callable | None):
    fn = jax.nn.softmax if normalizer is None else (lambda x: normalizer(x, None))
    p = fn(logits)  # (B, S)
    entropy = -(p * jnp.log(jnp.maximum(p, 1e-30))).sum(-1)
    jacobian = jax.jacfwd if normalizer is None else jax.jacrev  # tinytf's normalisers have custom VJPs
    jac = jax.vmap(jacobian(fn))(logits)  # (B, S, S): d weights / d logits
    return p.max(-1), entropy, jnp.sqrt((jac**2).sum((1, 2)))


def normalizer_row_stats(logits, normalizer: Callable | None = None) -> dict[str, Array]:
    """Per row of logits: the largest weight, the entropy and the norm of the Jacobian.

    Math: for p = normalize(x) over the S entries of a row,
    max_j p_j, H(p) = -sum_j p_j log p_j (nats; log S is uniform, 0 one-hot) and
    ||dp/dx||_F. For the softmax the Jacobian is diag(p) - p p^T, whose Frobenius norm
    goes to 0 as p becomes one-hot: a saturated softmax passes no gradient back
    (Vaswani et al. 2017, section 3.2.1).

    Args:
      logits: (B, S) rows of logits.
      normalizer: None for `jax.nn.softmax`, or a tinytf normaliser
        `(logits, mask) -> weights` (e.g. `tinytf.attention.get_normalizer("softmax1")`).

    Returns:
      {"max weight", "entropy", "gradient norm"}: each (B,).
    """
    x = jnp.asarray(logits)
    if x.ndim != 2:
        raise ValueError(f"logits has shape {tuple(x.shape)}: expected (B, S) rows of logits")
    max_weight, entropy, grad = _row_stats(x, normalizer)
    return {"max weight": max_weight, "entropy": entropy, "gradient norm": grad}


def logit_scale_sweep(dims: Sequence[int], *, num_keys: int = 32, rows: int = 256, seed: int = 0,
                      normalizer: Callable | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Saturation of the normaliser against the head dimension d, with and without 1/sqrt(d).

    For each d, draw `rows` queries q and `rows` x `num_keys` keys k with N(0, 1)
    entries (numpy's `default_rng(seed)`, float32, in the order of `dims`); the dot
    products q.k have variance d. Measure `normalizer_row_stats` of q.k / sqrt(d)
    ("scaled", what `dot_product_attention` computes by default) and of q.k
    ("unscaled", `scale=1.0`), averaged over the rows.

    Args:
      dims: head dimensions to try. num_keys: keys per row (S). rows: rows per d.
      seed: numpy seed of the draws. normalizer: as in `normalizer_row_stats`.

    Returns:
      {"scaled" | "unscaled": {"max weight", "entropy", "gradient norm", "logit std":
      (len(dims),) arrays}}.
    """
    if not dims or any(int(d) < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive ints, got {dims!r}")
    for name, value in (("num_keys", num_keys), ("rows", rows)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    rng = np.random.default_rng(seed)
    keys = ("max weight", "entropy", "gradient norm", "logit std")
    out = {name: {k: [] for k in keys} for name in ("scaled", "unscaled")}
    for d in dims:
        q = rng.standard_normal((rows, d), dtype=np.float32)
        k = rng.standard_normal((rows, num_keys, d), dtype=np.float32)
        dots = np.einsum("bh,bsh->bs", q, k)  # (rows, S): variance d
        for name, scale in (("scaled", 1 / math.sqrt(d)), ("unscaled", 1.0)):
            logits = jnp.asarray(dots * scale)
            stats = normalizer_row_stats(logits, normalizer)
            for key in keys[:3]:
                out[name][key].append(float(stats[key].mean()))
            out[name]["logit std"].append(float(logits.std()))
    return {name: {k: np.asarray(v) for k, v in row.items()} for name, row in out.items()}


def permutation_equivariance_error(fn: Callable, x, perm, *, axis: int = 1) -> float:
    """max |fn(x permuted) - fn(x) permuted|: 0 (to rounding) for a permutation-equivariant fn.

    Self-attention without positional information is permutation equivariant
    (Vaswani et al. 2017; Lee et al. 2019, "Set Transformer"): shuffling the tokens
    shuffles the outputs the same way.

    Args:
      fn: a function of x whose output has the permuted axis at the same place.
      x: the input, e.g. (B, T, D) tokens. perm: a permutation of range(x.shape[axis]).
      axis: the token axis.

    Returns:
      The largest absolute difference, a float.
    """
    x = jnp.asarray(x)
    perm = np.asarray(perm)
    if sorted(perm.tolist()) != list(range(x.shape[axis])):
        raise ValueError(f"perm must be a permutation of range({x.shape[axis]}) (x.shape[{axis}]), got {perm.tolist()}")
    permuted_out = jnp.take(fn(x), perm, axis=axis)
    return float(jnp.abs(fn(jnp.take(x, perm, axis=axis)) - permuted_out).max())


__all__ = ["normalizer_row_stats", "logit_scale_sweep", "permutation_equivariance_error"]
