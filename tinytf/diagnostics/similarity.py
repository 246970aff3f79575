"""How alike are two attention maps? JS divergence, cosine, and layer-by-layer matrices.

`js_divergence` (nats, 0 for equal, ln 2 for disjoint distributions) is the
distance used throughout: between layers here (adjacent layers of a trained model
attend alike, Xiao et al. 2019; Bhojanapalli et al. 2021) and between DETR object
queries in `queries.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.diagnostics.common import as_layers, cosine, xlogx

Array = jax.Array


def js_divergence(p, q, axis: int = -1) -> Array:
    """Jensen-Shannon divergence in nats (0 for equal, ln 2 for disjoint distributions).

    Math: JS(p, q) = KL(p || m)/2 + KL(q || m)/2, m = (p + q)/2 (Lin 1991). Inputs
    are renormalised along `axis` first, so maps whose rows do not sum to 1
    (softmax_1, sigmoid) are compared as distributions.

    Args:
      p, q: arrays of equal (broadcastable) shape, non-negative along `axis`.

    Returns:
      array with `axis` removed.
    """
    p = jnp.asarray(p, jnp.float32)
    q = jnp.asarray(q, jnp.float32)
    try:
        jnp.broadcast_shapes(p.shape, q.shape)
    except ValueError:
        raise ValueError(f"p has shape {p.shape} and q has shape {q.shape}: expected equal or broadcastable "
                         "shapes") from None
    p = p / jnp.maximum(p.sum(axis, keepdims=True), 1e-12)
    q = q / jnp.maximum(q.sum(axis, keepdims=True), 1e-12)
    m = 0.5 * (p + q)
    m_safe = jnp.where(m > 0, m, 1.0)
    kl_pm = (xlogx(p) - jnp.where(p > 0, p * jnp.log(m_safe), 0.0)).sum(axis)
    kl_qm = (xlogx(q) - jnp.where(q > 0, q * jnp.log(m_safe), 0.0)).sum(axis)
    return jnp.maximum(0.5 * (kl_pm + kl_qm), 0.0)


def cross_layer_similarity(maps, *, layers: Sequence[str] | None = None) -> dict:
    """JS divergence and cosine between every pair of layers' head-averaged maps.

    Math: JS[a, b] = mean_{examples, query rows i} JS(Abar_a[i,:], Abar_b[i,:]),
    cos[a, b] = mean_examples cos(vec Abar_a, vec Abar_b), Abar = mean over heads
    (Xiao et al. 2019, "Sharing Attention Weights for Fast Transformer";
    Bhojanapalli et al. 2021, "Reuse Transformers"). Head
    averaging sidesteps head permutation symmetry.

    Args:
      maps: {layer: (B, N, T, S)} or a list of maps, all with the same (B, T, S).
      layers: optional subset/order of layer names.

    Returns:
      {"layers": [names], "js": (L, L) array, "cosine": (L, L) array}.
    """
    items = as_layers(maps, layers=layers)
    shapes = {(w.shape[0], w.shape[2], w.shape[3]) for _, w in items}
    if len(shapes) != 1:
        raise ValueError(f"maps have different (B, T, S) shapes {sorted(shapes)}: expected one shape for all layers")
    mean_maps = jnp.stack([w.astype(jnp.float32).mean(1) for _, w in items])  # (L, B, T, S)
    a, b = mean_maps[:, None], mean_maps[None, :]  # (L, 1, B, T, S), (1, L, B, T, S)
    js = js_divergence(a, b).mean((-2, -1))  # (L, L)
    L, B = mean_maps.shape[:2]
    flat = mean_maps.reshape(L, B, -1)  # (L, B, T*S)
    cos = cosine(flat[:, None], flat[None, :]).mean(-1)  # (L, L)
    return {"layers": [n for n, _ in items], "js": js, "cosine": cos}


def adjacent_layer_js(maps, *, layers: Sequence[str] | None = None) -> dict:
    """JS divergence between adjacent layers' head-averaged maps, and the same against another input.

    Math: same[l] = mean_{b, i} JS(Abar_l[b, i, :], Abar_{l+1}[b, i, :]); other[l] uses
    Abar_{l+1}[b - 1] (the next layer's map of *another* example, np.roll over the batch)
    as a control: maps that are alike only because every input gives the same
    positional pattern score as low on the control as on the same input
    (Xiao et al. 2019; Bhojanapalli et al. 2021).

    Args:
      maps: {layer: (B, N, T, S)} or a list of maps, all with the same (B, T, S), B >= 2.
      layers: optional subset/order of layer names.

    Returns:
      {"same input": (L-1,) array, "other input": (L-1,) array}.
    """
    items = as_layers(maps, layers=layers)
    if len(items) < 2 or items[0][1].shape[0] < 2:
        raise ValueError(f"adjacent_layer_js needs >= 2 layers and >= 2 examples, got {len(items)} layer(s) of shape "
                         f"{tuple(items[0][1].shape)}")
    mean_maps = [np.asarray(w, np.float32).mean(1) for _, w in items]  # [(B, T, S)] head-averaged
    same = [float(js_divergence(a, b).mean()) for a, b in zip(mean_maps, mean_maps[1:])]
    other = [float(js_divergence(a, np.roll(b, 1, axis=0)).mean()) for a, b in zip(mean_maps, mean_maps[1:])]
    return {"same input": np.asarray(same), "other input": np.asarray(other)}
