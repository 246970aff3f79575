"""The DETR diagnostic checklist: are the object queries looking at different places?

DETR's decoder turns Q learned object queries into Q detections. Early in
training (and for good if keys carry no position) every query's cross-attention
map looks the same, and detection fails (Carion et al. 2020; Meng et al. 2021,
"Conditional DETR"). This file measures that:

  1. `query_map_similarity` — mean pairwise cosine / Jensen-Shannon divergence
     between the queries' (head-averaged) cross-attention maps, plus map entropy;
  2. `query_embedding_diversity` — are the query embeddings themselves distinct?
  3. `positional_encoding_similarity`, `sine_2d_frequencies`, `sine_pe_aliasing` —
     does the key positional encoding tell cells apart on a small grid?
  4. `detr_query_report` — all of the above in one dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.diagnostics.common import cosine, xlogx
from tinytf.diagnostics.similarity import js_divergence

Array = jax.Array


def _query_maps(weights, name: str = "weights") -> Array:
    """(B, N, Q, S) -> head mean (B, Q, S); (B, Q, S) is taken as already averaged."""
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim == 4:
        w = w.mean(1)  # (B, Q, S)
    if w.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(w.shape)}: expected cross-attention maps (B, N, Q, S) or head-averaged (B, Q, S)")
    if w.shape[1] < 2:
        raise ValueError(f"{name} has {w.shape[1]} queries: need at least 2 to compare query maps")
    return w


def _pair_mean(matrix: Array) -> Array:
    """Mean of the strict upper triangle of (..., Q, Q) matrices -> (...,)."""
    Q = matrix.shape[-1]
    upper = jnp.triu(jnp.ones((Q, Q), bool), k=1)
    upper = upper.reshape((1,) * (matrix.ndim - 2) + (Q, Q))  # explicit rank for strict promotion
    return (matrix * upper).sum((-2, -1)) / upper.sum()


def pairwise_cosine(vectors) -> Array:
    """Mean pairwise cosine similarity of Q vectors, per batch element.

    Math: (2/(Q(Q-1))) sum_{q<r} cos(v_q, v_r).

    Args:
      vectors: (..., Q, D).

    Returns:
      (...,) mean pairwise cosine.
    """
    v = jnp.asarray(vectors, jnp.float32)
    cos = cosine(v[..., :, None, :], v[..., None, :, :])  # (..., Q, Q)
    return _pair_mean(cos)


def pairwise_js(distributions) -> Array:
    """Mean pairwise Jensen-Shannon divergence (nats, max ln 2) of Q distributions.

    Args:
      distributions: (..., Q, S) non-negative rows (renormalised inside).

    Returns:
      (...,) mean over pairs q < r.
    """
    p = jnp.asarray(distributions, jnp.float32)
    js = js_divergence(p[..., :, None, :], p[..., None, :, :])  # (..., Q, Q)
    return _pair_mean(js)


def query_map_similarity(weights) -> dict:
    """How alike are the object queries' cross-attention maps?

    Math: for head-averaged maps a_q (last decoder layer), pair-cos =
    (2/(Q(Q-1))) sum_{q<r} cos(a_q, a_r), pair-JS the same with JS divergence in
    nats (max ln 2 = 0.693), entropy = mean_q -sum_s a_q(s) log a_q(s); all
    averaged over images (why DETR's maps look alike: Meng et al. 2021, "Conditional DETR").
    Identical maps give cosine 1 and JS 0; disjoint one-hot maps cosine 0 and
    JS ln 2.

    Args:
      weights: (B, N, Q, S) cross-attention weights of one decoder layer, or
        head-averaged (B, Q, S).

    Returns:
      {"cosine": scalar, "js": scalar, "entropy": scalar (nats; uniform = log S)}.
    """
    a = _query_maps(weights)
    rows = a / jnp.maximum(a.sum(-1, keepdims=True), 1e-12)
    entropy = -xlogx(rows).sum(-1).mean()
    return {"cosine": pairwise_cosine(a).mean(), "js": pairwise_js(a).mean(), "entropy": entropy}


def query_embedding_diversity(embeddings) -> Array:
    """Mean pairwise cosine of the learned object-query embeddings (1 = all identical).

    Identical query_pos for every query makes the maps identical by symmetry
    (the negative control of the detr-queries lesson), so check the embeddings first.

    Args:
      embeddings: (Q, D) or (B, Q, D).

    Returns:
      scalar mean pairwise cosine.
    """
    e = jnp.asarray(embeddings, jnp.float32)
    if e.ndim not in (2, 3) or e.shape[-2] < 2:
        raise ValueError(f"embeddings has shape {tuple(e.shape)}: expected (Q, D) or (B, Q, D) with Q >= 2")
    return pairwise_cosine(e).mean()


def sine_2d_frequencies(dim: int, *, temperature: float = 10000.0) -> np.ndarray:
    """Angular frequencies (radians per unit coordinate) of a DETR 2-D sine code.

    Matches `tinytf.positional.sine_2d`: each axis uses dim/2 channels, i.e.
    dim/4 sin/cos pairs with frequency temperature^(-2k/(dim/2)).

    Returns:
      (dim // 4,) float64.
    """
    if dim % 4:
        raise ValueError(f"dim={dim}: expected a multiple of 4 for 2-D sine encodings")
    half = dim // 2
    return temperature ** (-np.arange(0, half, 2, dtype=np.float64) / half)


def sine_pe_aliasing(frequencies, spacing: float = 1.0) -> dict:
    """Nyquist check of a sine positional code on a grid.

    Sampling sin(w c) on cells spaced `spacing` apart aliases when the phase step
    w * spacing exceeds pi: the code then looks like noise to the model (e.g. coordinates
    normalised to [0, 1] with frequencies 2^k pi alias on an 8x8 grid).

    Args:
      frequencies: (F,) angular frequencies per unit coordinate (e.g.
        `sine_2d_frequencies(dim)`).
      spacing: coordinate step between neighbouring cells (1 for pixel/cell
        coordinates; scale/height for DETR's normalised coordinates).

    Returns:
      {"max_step": largest phase step per cell (radians), "nyquist_exceeded":
       bool, "aliased_fraction": share of frequencies above Nyquist}.
    """
    f = np.abs(np.asarray(frequencies, np.float64)).reshape(-1)
    if f.size == 0:
        raise ValueError("frequencies is empty: expected at least one frequency")
    step = f * float(spacing)
    return {"max_step": float(step.max()), "nyquist_exceeded": bool(step.max() > math.pi),
            "aliased_fraction": float((step > math.pi).mean())}


def positional_encoding_similarity(pos, height: int, width: int) -> dict:
    """Can a positional encoding tell the cells of an H x W grid apart?

    Reports cosine similarities between the encodings of distinct cells and the
    Pearson correlation between cosine and spatial distance: a healthy code is
    similar for neighbours and dissimilar far away (correlation strongly
    negative); an aliased code looks like noise (correlation near 0); a
    degenerate one has max cosine near 1 (two cells encoded alike).

    Args:
      pos: (H*W, D) row-major or (H, W, D) encodings.
      height, width: the grid.

    Returns:
      {"max_cosine", "mean_cosine" (over distinct cells), "neighbour_cosine"
       (4-neighbours), "distance_correlation"}.
    """
    p = np.asarray(pos, np.float64)
    if p.ndim == 3:
        p = p.reshape(-1, p.shape[-1])
    if p.ndim != 2 or p.shape[0] != height * width:
        raise ValueError(f"pos has shape {np.shape(pos)}: expected ({height * width}, D) or ({height}, {width}, D)")
    unit = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    cos = unit @ unit.T  # (P, P)
    rows, cols = np.divmod(np.arange(height * width), width)
    dist = np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])  # (P, P)
    off = ~np.eye(height * width, dtype=bool)
    neighbours = np.isclose(dist, 1.0)
    corr = float(np.corrcoef(cos[off], dist[off])[0, 1]) if off.sum() > 1 and cos[off].std() > 0 else 0.0
    return {"max_cosine": float(cos[off].max()), "mean_cosine": float(cos[off].mean()),
            "neighbour_cosine": float(cos[neighbours].mean()) if neighbours.any() else float("nan"),
            "distance_correlation": corr}


# detr_query_report runs as a fit callback every few steps: one compiled program each, not op by op
_compiled_map_similarity = jax.jit(query_map_similarity)
_compiled_embedding_diversity = jax.jit(query_embedding_diversity)


def detr_query_report(weights, query_embed=None, pos_embed=None, *, grid: tuple[int, int] | None = None,
                      layer: str | None = None) -> dict:
    """The DETR checklist in one call: query maps, query embeddings, key positional code.

    Args:
      weights: (B, N, Q, S) last-layer cross-attention, or the dict from
        `capture_attention` (then `layer`, or the last name containing
        "cross_attn", is used).
      query_embed: optional (Q, D) learned query (positional) embeddings.
      pos_embed: optional (S, D) or (H, W, D) key positional encodings.
      grid: (H, W) of the feature map, needed with `pos_embed` (default: square).

    Returns:
      dict with "map_cosine", "map_js", "map_entropy", "uniform_entropy" (log S)
      and, when given, "query_embedding_cosine" and "pe_*" entries from
      `positional_encoding_similarity`.
    """
    if isinstance(weights, Mapping):
        names = [n for n in weights if "cross_attn" in n] if layer is None else [layer]
        if not names or names[-1] not in weights:
            raise ValueError(f"layer={layer!r}: no such cross-attention layer among {list(weights)}")
        weights = weights[names[-1]]
    sim = _compiled_map_similarity(weights)
    S = jnp.shape(weights)[-1]
    report = {"map_cosine": float(sim["cosine"]), "map_js": float(sim["js"]),
              "map_entropy": float(sim["entropy"]), "uniform_entropy": math.log(S)}
    if query_embed is not None:
        report["query_embedding_cosine"] = float(_compiled_embedding_diversity(query_embed))
    if pos_embed is not None:
        if grid is None:
            side = math.isqrt(S)
            if side * side != S:
                raise ValueError(f"grid is needed: {S} keys is not a square number")
            grid = (side, side)
        for k, v in positional_encoding_similarity(pos_embed, *grid).items():
            report[f"pe_{k}"] = v
    return report
