"""Which input tokens did the prediction use? Attention rollout, gradients, faithfulness.

Raw attention of one layer is a poor explanation in deep models: information has
already mixed across tokens in earlier layers (Jain & Wallace 2019, "Attention
is not Explanation"). This file builds the tools to test attributions:

  1. `attention_rollout` — multiply the head-averaged maps of all layers, with
     the residual path as an identity (Abnar & Zuidema 2020);
  2. `grad_times_input` — gradient x input saliency w.r.t. input embeddings
     (Shrikumar et al. 2017; Simonyan et al. 2014 for plain gradients);
  3. `deletion_curve`, `aopc` — delete the top-k tokens of an attribution and
     watch the predicted-class probability fall (Samek et al. 2017): a faithful
     attribution makes it fall fast;
  4. `kendall_tau`, `precision_at_k` — agreement between attributions and
     plausibility against known relevant tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.diagnostics.common import as_layers

Array = jax.Array


def attention_rollout(maps, *, residual: float = 0.5, layers=None) -> Array:
    """Attention rollout: how much each input token flows into each output token.

    Math: Abar_l = mean_h A_l; A'_l = rownorm(residual * I + (1 - residual) * Abar_l);
    R = A'_L A'_{L-1} ... A'_1  (Abnar & Zuidema 2020, "Quantifying Attention Flow
    in Transformers"). The identity stands for the residual
    connection. Row i of R attributes output token i to the input tokens;
    for a classifier take the CLS row and drop the CLS column (the CLS token is not
    a part of the input to explain).

    Args:
      maps: {layer: (B, N, T, T)} in network order (e.g. from
        `capture_attention`), a list of maps, or a (L, B, N, T, T) array.
      residual: weight of the identity (0.5 in the paper; 0 = plain product).
      layers: optional list of layer names to use, in order.

    Returns:
      (B, T, T) rollout matrices; rows sum to 1 when the maps' rows do.
    """
    items = as_layers(maps, layers=layers)
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual={residual}: expected a weight in [0, 1]")
    rollout = None
    for name, w in items:
        B, N, T, S = w.shape
        if T != S or (rollout is not None and rollout.shape != (B, T, T)):
            raise ValueError(f"layer {name!r} has map shape {tuple(w.shape)}: rollout needs square self-attention "
                             f"maps of one shape (B, N, T, T) in every layer")
        a = residual * jnp.eye(T)[None] + (1.0 - residual) * w.astype(jnp.float32).mean(1)  # (B, T, T)
        a = a / jnp.maximum(a.sum(-1, keepdims=True), 1e-12)
        rollout = a if rollout is None else jnp.einsum("bij,bjk->bik", a, rollout)  # (B, T, T)
    return rollout


def grad_times_input(fn: Callable, embeddings, target=None, *, absolute: bool = False) -> Array:
    """Gradient x input saliency of the target logit w.r.t. input embeddings.

    Math: s_t = sum_d x_td * d logit_y / d x_td  (Shrikumar et al. 2017; Simonyan
    et al. 2014). Uses the logit, not the probability, which
    saturates on confident models.

    Args:
      fn: embeddings (B, T, D) -> logits (B, C). For a language model, close
        over the position to explain; for a ViT, feed patch embeddings.
      embeddings: (B, T, D) input embeddings.
      target: (B,) class per example; default the predicted class.
      absolute: return |s_t|.

    Returns:
      (B, T) saliency per token.
    """
    x = jnp.asarray(embeddings)
    if x.ndim != 3:
        raise ValueError(f"embeddings has shape {tuple(x.shape)}: expected (B, T, D)")
    logits = fn(x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"fn returned logits of shape {tuple(logits.shape)}: expected (B, C) with B={x.shape[0]}")
    y = jnp.argmax(logits, -1) if target is None else jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))

    def picked(e):
        return jnp.take_along_axis(fn(e), y[:, None], axis=-1).sum()  # sum over the batch of logit_y

    grads = jax.grad(picked)(x)  # (B, T, D); examples are independent
    scores = (grads * x).sum(-1)  # (B, T)
    return jnp.abs(scores) if absolute else scores


def _candidates(candidates, shape, name="candidates") -> np.ndarray:
    if candidates is None:
        return np.ones(shape, bool)
    c = np.asarray(candidates, bool)
    try:
        return np.broadcast_to(c, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {c.shape}: expected (T,) or (B, T) matching scores {shape}") from None


def deletion_curve(predict_fn: Callable, inputs, scores, ks, *, baseline, target=None, candidates=None,
                   per_example: bool = False) -> np.ndarray:
    """Drop in predicted-class probability after deleting the top-k tokens of an attribution.

    Math: drop_k = p(y | x) - p(y | x with its k highest-scored tokens replaced by
    `baseline`), y = the prediction on the intact input (Samek et al. 2017,
    "Evaluating the visualization of what a deep neural network has learned").
    Deleting with a token the model never saw is out of
    distribution: train with random MASKing or report insertion curves too.

    Args:
      predict_fn: inputs -> logits (B, C).
      inputs: (B, T) token ids or (B, T, D) embeddings.
      scores: (B, T) attribution, higher = more important.
      ks: numbers of deleted tokens, e.g. range(1, 9).
      baseline: replacement: a token id (for ids) or a (D,) vector / scalar.
      target: (B,) class to track; default the intact prediction.
      candidates: optional (T,) or (B, T) bool; False = never deleted (CLS, padding).
      per_example: return (B, K) instead of the batch mean.

    Returns:
      (K,) mean drop per k, or (B, K).
    """
    x = jnp.asarray(inputs)
    s = np.asarray(scores, np.float64)
    if x.ndim not in (2, 3) or s.shape != x.shape[:2]:
        raise ValueError(f"scores has shape {s.shape}, inputs {tuple(x.shape)}: expected scores (B, T) matching inputs (B, T[, D])")
    allowed = _candidates(candidates, s.shape)
    ranked = np.where(allowed, s, -np.inf)
    rank = np.argsort(np.argsort(-ranked, axis=-1, kind="stable"), axis=-1)  # (B, T) 0 = most important
    probs0 = jax.nn.softmax(predict_fn(x), -1)
    y = jnp.argmax(probs0, -1) if target is None else jnp.broadcast_to(jnp.asarray(target), (x.shape[0],))
    p0 = np.asarray(jnp.take_along_axis(probs0, y[:, None], -1)[:, 0])
    base = jnp.asarray(baseline, x.dtype)
    drops = []
    for k in ks:
        delete = jnp.asarray((rank < int(k)) & allowed)  # (B, T)
        if x.ndim == 3:
            delete = delete[..., None]
        xk = jnp.where(delete, base, x)
        pk = np.asarray(jnp.take_along_axis(jax.nn.softmax(predict_fn(xk), -1), y[:, None], -1)[:, 0])
        drops.append(p0 - pk)
    drops = np.stack(drops, -1)  # (B, K)
    return drops if per_example else drops.mean(0)


def aopc(drops) -> float | np.ndarray:
    """Area over the perturbation curve: mean drop over k = 1..K (higher = more faithful).

    Math: AOPC = (1/K) sum_{k=1..K} (p_0 - p_k)  (Samek et al. 2017).

    Args:
      drops: (K,) or (B, K) output of `deletion_curve` for ks = 1..K.

    Returns:
      float, or (B,) for per-example drops.
    """
    d = np.asarray(drops, np.float64)
    if d.ndim not in (1, 2) or d.shape[-1] == 0:
        raise ValueError(f"drops has shape {d.shape}: expected (K,) or (B, K) with K >= 1")
    out = d.mean(-1)
    return float(out) if d.ndim == 1 else out


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b of two 1-D arrays (Kendall 1945), ties handled as scipy does."""
    n = x.shape[0]
    iu = np.triu_indices(n, k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    n0 = dx.size
    denom = np.sqrt(float(n0 - (dx == 0).sum()) * float(n0 - (dy == 0).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def kendall_tau(a, b, *, candidates=None) -> np.ndarray:
    """Kendall tau-b rank agreement between two attributions, per example.

    Math: tau_b = (concordant - discordant) / sqrt((n0 - ties_a)(n0 - ties_b))
    (Kendall 1945; used by Jain & Wallace 2019 to compare attention with
    gradient importance). NaN if one ranking is constant.

    Args:
      a, b: (B, T) or (T,) scores.
      candidates: optional (T,) or (B, T) bool: tokens to compare (drop CLS, padding).

    Returns:
      (B,) tau per example (a float for 1-D inputs).
    """
    a2, b2 = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a2.shape != b2.shape or a2.ndim != 2:
        raise ValueError(f"a has shape {np.shape(a)}, b {np.shape(b)}: expected equal shapes (B, T) or (T,)")
    keep = _candidates(candidates, a2.shape)
    taus = np.array([_tau_b(a2[i][keep[i]], b2[i][keep[i]]) for i in range(a2.shape[0])])
    return float(taus[0]) if np.ndim(a) == 1 else taus


def precision_at_k(scores, relevant, k: int | None = None, *, candidates=None) -> float:
    """Share of the top-k scored tokens that are truly relevant, averaged over examples.

    Math: |top_k(scores) & relevant| / k with k = #relevant per example by default
    (plausibility: does the attribution point where a person would?).

    Args:
      scores: (B, T) attribution. relevant: (B, T) bool ground truth.
      k: fixed k, or None for k = number of relevant tokens of each example.
      candidates: optional (T,) or (B, T) bool: tokens that may be ranked.

    Returns:
      mean precision over examples with k >= 1.
    """
    s = np.atleast_2d(np.asarray(scores, np.float64))
    r = np.atleast_2d(np.asarray(relevant, bool))
    if s.shape != r.shape:
        raise ValueError(f"scores has shape {s.shape}, relevant {r.shape}: expected equal (B, T)")
    allowed = _candidates(candidates, s.shape)
    order = np.argsort(-np.where(allowed, s, -np.inf), axis=-1, kind="stable")  # (B, T)
    precisions = []
    for i in range(s.shape[0]):
        ki = int((r[i] & allowed[i]).sum()) if k is None else int(k)
        if ki >= 1:
            precisions.append(r[i][order[i][:ki]].mean())
    if not precisions:
        raise ValueError("no example has a relevant token: precision@k is undefined")
    return float(np.mean(precisions))


def attribution_report(predict_fn: Callable, inputs, attributions: Mapping[str, object], ks, *, baseline,
                       reference: str | None = None, relevant=None, candidates=None) -> dict:
    """AOPC, deletion drops, Kendall tau (vs `reference`) and precision@k for several attributions.

    Returns:
      {method: {"aopc", "drops" (K,), "tau" (if reference), "precision_at_k" (if relevant)}}.
    """
    out = {}
    for name, scores in attributions.items():
        drops = deletion_curve(predict_fn, inputs, scores, ks, baseline=baseline, candidates=candidates)
        row = {"aopc": aopc(drops), "drops": drops}
        if reference is not None:
            row["tau"] = float(np.nanmean(kendall_tau(scores, attributions[reference], candidates=candidates)))
        if relevant is not None:
            row["precision_at_k"] = precision_at_k(scores, relevant, candidates=candidates)
        out[name] = row
    return out
