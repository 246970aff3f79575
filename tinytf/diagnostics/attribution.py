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
     plausibility against known relevant tokens;
  5. `attention_flow` — the maximum flow from each input token to an output
     through the layer graph (Abnar & Zuidema 2020), rollout's companion.
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
                       reference: str | None = None, relevant=None, candidates=None, pairs=(),
                       subset: int | None = None) -> dict:
    """AOPC, deletion drops, Kendall tau and precision@k for several attributions of the same inputs.

    Every method's deletion curve is computed once per example (`deletion_curve`, Samek et
    al. 2017); the batch means give "drops" and "aopc", and with `subset` the means over the
    first n examples give the same metrics there. An attribution that is too expensive for the
    whole batch (e.g. `attention_flow`) may be given for the first n = `subset` examples only:
    it is measured there only (its rows are padded with zeros for the deletion pass, which
    keeps one batch shape and so one compiled `predict_fn`; a padded row changes no other row).

    Args:
      predict_fn, inputs, ks, baseline, candidates: as in `deletion_curve`.
      attributions: {method: (B, T) scores}, or (n, T) scores for n = `subset`.
      reference: method whose Kendall tau with every method is reported as "tau".
      relevant: optional (B, T) bool ground truth for precision@k.
      pairs: (a, b) method pairs: Kendall tau of a with b (mean over examples) as
        report[a]["tau_vs"][b], over the examples both methods have.
      subset: n: repeat every metric on the first n examples under report[method]["subset"].

    Returns:
      {method: {"aopc", "drops" (K,), "tau" (if reference), "tau_vs" {b: tau} (if pairs),
      "precision_at_k" (if relevant), "subset": {the same keys on the first n} (if subset)}};
      a method given on the first n examples only has just "subset".
    """
    x = jnp.asarray(inputs)
    B = x.shape[0]
    if subset is not None and not 1 <= int(subset) <= B:
        raise ValueError(f"subset={subset}: expected a number of examples in [1, {B}]")
    n = B if subset is None else int(subset)
    scores = {name: np.asarray(s, np.float64) for name, s in attributions.items()}
    for name, s in scores.items():
        if s.ndim != 2 or s.shape[0] not in (B, n):
            raise ValueError(f"attributions[{name!r}] has shape {s.shape}: expected (B={B}, T)"
                             + (f" or (subset={n}, T)" if subset is not None else ""))
    for a, b in pairs:
        if a not in scores or b not in scores:
            raise ValueError(f"pairs has ({a!r}, {b!r}): expected names among the attributions {list(scores)}")
    if reference is not None and reference not in scores:
        raise ValueError(f"reference={reference!r}: expected one of the attributions {list(scores)}")
    rel = None if relevant is None else np.asarray(relevant, bool)

    def metrics(s, each, rows, partner):
        row = {"drops": each[:rows].mean(0)}
        row["aopc"] = aopc(row["drops"])
        cand = None if candidates is None else _candidates(candidates, (B, s.shape[1]))[:rows]
        if reference is not None and scores[reference].shape[0] >= rows:
            row["tau"] = float(np.nanmean(kendall_tau(s[:rows], scores[reference][:rows], candidates=cand)))
        if pairs:
            row["tau_vs"] = {b: float(np.nanmean(kendall_tau(s[:rows], scores[b][:rows], candidates=cand)))
                             for b in partner if scores[b].shape[0] >= rows}
        if rel is not None:
            row["precision_at_k"] = precision_at_k(s[:rows], rel[:rows], candidates=cand)
        return row

    out = {}
    for name, s in scores.items():
        full = s.shape[0] == B
        padded = s if full else np.concatenate([s, np.zeros((B - n, s.shape[1]))])
        each = deletion_curve(predict_fn, x, padded, ks, baseline=baseline, candidates=candidates,
                              per_example=True)  # (B, K)
        partner = [b for a, b in pairs if a == name]
        out[name] = metrics(s, each, B, partner) if full else {}
        if subset is not None:
            out[name]["subset"] = metrics(s, each, n, partner)
    return out


def attention_flow(maps, *, output: int = 0, residual: float = 0.5, layers=None, normalize: bool = False,
                   scale: int = 2 ** 20) -> np.ndarray:
    """Attention flow: the maximum flow from each input token to one output token (Abnar & Zuidema 2020).

    Math: a layered graph with a node (l, t) for every layer boundary l = 0..L and
    token t; an edge (l-1, j) -> (l, i) has capacity A'_l[i, j], with
    A'_l = rownorm(residual * I + (1 - residual) * mean_h A_l) the residual-augmented
    map that `attention_rollout` multiplies. The flow of input token j is the value of
    a maximum flow from node (0, j) to node (L, output) (Abnar & Zuidema 2020,
    "Quantifying Attention Flow in Transformers", ACL, section 3). Rollout sums the
    products of the weights along every path; flow is limited by the narrowest cut
    between the two nodes, so a token whose information is spread over many paths can
    get more than its rollout share and a token behind one weak edge gets less. The
    flows of one output over the inputs do not sum to 1 (every one of them is <= 1).

    Cost: one maximum flow per example and input token, solved by scipy's Dinic
    algorithm (`scipy.sparse.csgraph.maximum_flow`) on capacities rounded to
    integers (`scale` per unit, error <= (number of edges) / (2 * scale)); about a
    millisecond per flow on the graphs of a tiny ViT.

    Args:
      maps: {layer: (B, N, T, T)} in network order (e.g. from `capture_attention`),
        a list of maps, or a (L, B, N, T, T) array.
      output: the output token whose inputs are attributed (0 = CLS of a ViT).
      residual: weight of the identity (0.5 in the paper, as in rollout).
      layers: optional list of layer names to use, in order.
      normalize: divide each example's flows by their sum, as the authors' released code
        does (rankings, and so deletion / precision@k / Kendall tau, are unchanged).
      scale: integer units per unit of capacity.

    Returns:
      (B, T) float64: the flow from each input token to `output`, in [0, 1].
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    items = as_layers(maps, layers=layers)
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual={residual}: expected a weight in [0, 1]")
    if int(scale) < 1 or int(scale) > 2 ** 24:
        raise ValueError(f"scale={scale}: expected an integer in [1, 2**24] (capacities must fit int32)")
    mats = []
    for name, w in items:
        w = np.asarray(w, np.float64)
        B, N, T, S = w.shape
        if T != S or (mats and mats[0].shape != (B, T, T)):
            raise ValueError(f"layer {name!r} has map shape {w.shape}: attention flow needs square self-attention "
                             f"maps of one shape (B, N, T, T) in every layer")
        a = residual * np.eye(T)[None] + (1.0 - residual) * w.mean(1)  # (B, T, T)
        mats.append(a / np.maximum(a.sum(-1, keepdims=True), 1e-12))
    B, T, _ = mats[0].shape
    if not -T <= output < T:
        raise ValueError(f"output={output}: expected a token index in [-{T}, {T})")
    L = len(mats)
    nodes = (L + 1) * T
    sink = L * T + output % T
    flows = np.zeros((B, T))
    for b in range(B):
        cap = np.zeros((nodes, nodes), np.int64)
        for l, a in enumerate(mats):  # edge (l, j) -> (l + 1, i) carries A'_{l+1}[i, j]
            cap[l * T:(l + 1) * T, (l + 1) * T:(l + 2) * T] = np.rint(a[b].T * int(scale))
        graph = csr_matrix(cap.astype(np.int32))
        for j in range(T):
            flows[b, j] = maximum_flow(graph, j, sink, method="dinic").flow_value / int(scale)
    if normalize:
        flows = flows / np.maximum(flows.sum(-1, keepdims=True), 1e-12)
    return flows
