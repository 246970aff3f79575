"""Numbers from attention maps: entropy, logits, sinks, needles, rank, layer similarity.

Every function takes plain arrays — attention weights `(B, N, T, S)` as returned
by `tinytf.attention.dot_product_attention`, or the dict `{layer_name: weights}`
from `capture_attention` — and returns numbers or small arrays. They are pure
`jax.numpy`, so the ones used during training (entropy, max logit, sink rate) run
under `jax.jit` (keep the keyword arguments static).

Reading order (the lesson that uses them in brackets):
  1. `attention_entropy`, `entropy_stats`, `max_attention_logit`, `max_logit`  [entropy-collapse]
     (Zhai et al. 2023; Dehghani et al. 2023; Wortsman et al. 2023)
  2. `sink_scores`, `sink_rate` (Gu et al. 2024), `bos_mass`, `null_mass`      [attention-sinks]
  3. `needle_mass` (Nakanishi 2025)                                             [dilution]
Rank collapse of token representations is in `representations.py`, map-to-map
similarity (JS divergence, cross-layer) in `similarity.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.checks import check_number
from tinytf.diagnostics.common import as_layers, as_weights, broadcast_mask, xlogx

Array = jax.Array


# --------------------------------------------------------------------------- helpers


def _causal(T: int, S: int) -> Array:
    """(T, S) bool: query i sees keys j <= i + S - T (same convention as `tinytf.attention.causal_mask`)."""
    return jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + (S - T)


def _query_mask(query_mask, B: int, T: int, name: str = "query_mask") -> Array:
    """(T,) or (B, T) bool -> (B, T) bool; None -> all True."""
    if query_mask is None:
        return jnp.ones((B, T), dtype=bool)
    qm = jnp.asarray(query_mask, dtype=bool)
    if qm.ndim not in (1, 2) or qm.shape[-1] != T or (qm.ndim == 2 and qm.shape[0] not in (1, B)):
        raise ValueError(f"{name} has shape {tuple(qm.shape)}: expected ({T},) or ({B}, {T}) booleans over queries")
    return jnp.broadcast_to(qm, (B, T))


def _masked_mean(values: Array, valid: Array, axis) -> Array:
    """Mean of `values` over `axis` where `valid` is True (0 where nothing is valid)."""
    valid = valid.astype(values.dtype)
    total = (values * valid).sum(axis)
    count = valid.sum(axis)
    return total / jnp.maximum(count, 1.0)


# --------------------------------------------------------------------------- 1. entropy and logits


def attention_entropy(weights, mask=None, *, is_causal: bool = False, skip_first: int = 0,
                      normalize: bool = False, query_mask=None) -> Array:
    """Attention entropy per head, averaged over valid queries and the batch.

    Math: Ent(A_h) = -(1/|valid|) sum_{b,i valid} sum_j A_bhij log A_bhij  (nats)
    (Zhai et al. 2023, "Stabilizing Transformer Training by Preventing Attention
    Entropy Collapse"). Uniform attention over S keys gives log S,
    a one-hot row gives 0.

    Causal caveat: query i of a causal map sees only i+1 keys, so early rows have
    trivially low entropy. Either drop them (`skip_first=8`) or set
    `normalize=True`, which divides each row by log(#visible keys) (rows with a
    single visible key are then skipped) so every row lies in [0, 1].

    Args:
      weights: (B, N, T, S) attention weights (rows need not sum to 1; the
        formula is applied as is).
      mask: optional bool mask broadcastable to (B, N, T, S), True = may attend;
        it defines the visible keys (for `normalize`) and drops rows with none.
      is_causal: also apply the causal mask (query i sees keys j <= i + S - T).
      skip_first: ignore the first `skip_first` queries.
      normalize: divide each row's entropy by log(#visible keys).
      query_mask: optional (T,) or (B, T) bool, False = ignore that query
        (padding, or e.g. trigger rows).

    Returns:
      (N,) mean entropy per head.
    """
    w = as_weights(weights)
    B, N, T, S = w.shape
    ent = -xlogx(w.astype(jnp.float32)).sum(-1)  # (B, N, T)
    visible = None
    if mask is not None:
        visible = broadcast_mask(mask, w.shape)
    if is_causal:
        causal = jnp.broadcast_to(_causal(T, S), w.shape)
        visible = causal if visible is None else visible & causal
    n_visible = jnp.full((B, N, T), float(S)) if visible is None else visible.sum(-1).astype(jnp.float32)
    valid = (n_visible > 0) & (jnp.arange(T) >= skip_first)[None, None, :]  # (B, N, T)
    valid = valid & _query_mask(query_mask, B, T)[:, None, :]
    if normalize:
        valid = valid & (n_visible > 1)
        ent = ent / jnp.log(jnp.maximum(n_visible, 2.0))
    return _masked_mean(ent, valid, axis=(0, 2))  # (N,)


def entropy_stats(maps, **kwargs) -> dict:
    """Entropy summary over many layers: mean, min over heads, and per-head values.

    Args:
      maps: {layer_name: (B, N, T, S)} (e.g. from `capture_attention`), a list of
        maps, or one (B, N, T, S) array.
      **kwargs: passed to `attention_entropy` (mask, is_causal, skip_first, ...).

    Returns:
      {"entropy_mean": scalar mean over all heads of all layers,
       "entropy_min": scalar entropy of the lowest-entropy head (the collapse
       signal of Zhai et al. 2023), "per_head": {layer_name: (N,)}}.
    """
    per_head = {name: attention_entropy(w, **kwargs) for name, w in as_layers(maps)}
    flat = jnp.concatenate([v for v in per_head.values()])
    return {"entropy_mean": flat.mean(), "entropy_min": flat.min(), "per_head": per_head}


def max_logit(logits, mask=None, *, per_head: bool = False) -> Array:
    """Largest |attention logit| over valid (unmasked) query-key pairs.

    Math: max_{b,h,i,j valid} |s_bhij|  (Dehghani et al. 2023; Wortsman et al. 2023).
    Growth of this number by orders of magnitude precedes entropy
    collapse and divergence at high learning rates.

    Args:
      logits: (B, N, T, S) pre-normalisation attention logits (already scaled),
        or a dict {layer: logits} such as the second value of
        `capture_attention(model, x, with_logits=True)` (then the max over layers).
      mask: optional bool mask broadcastable to (B, N, T, S), True = valid.
      per_head: return one value per head instead of the overall max
        ({layer: (N,)} for a dict).

    Returns:
      scalar, or (N,) with `per_head`. 0 if nothing is valid.
    """
    if isinstance(logits, Mapping):
        per_layer = {name: max_logit(v, mask, per_head=per_head) for name, v in logits.items()}
        return per_layer if per_head else jnp.stack(list(per_layer.values())).max()
    s = jnp.abs(as_weights(logits, "logits").astype(jnp.float32))
    if mask is not None:
        s = jnp.where(broadcast_mask(mask, s.shape), s, 0.0)
    return s.max(axis=(0, 2, 3)) if per_head else s.max()


def max_attention_logit(query, key, *, scale: float | None = None, mask=None, bias=None,
                        per_head: bool = False) -> Array:
    """Largest |q_i . k_j * scale| over valid pairs, from queries and keys.

    Math: max |q_i^T k_j / sqrt(H)|  (Wortsman et al. 2023, "Small-scale proxies
    for large-scale Transformer training instabilities"). Pass the
    queries/keys exactly as they enter the dot product (after projection, QK-norm
    and RoPE).

    Args:
      query: (B, T, N, H). key: (B, S, N, H).
      scale: logit scale; default 1/sqrt(H).
      mask: optional bool mask broadcastable to (B, N, T, S).
      bias: optional additive bias broadcastable to (B, N, T, S) (ALiBi ...).
      per_head: return (N,) instead of a scalar.

    Returns:
      scalar, or (N,) with `per_head`.
    """
    q, k = jnp.asarray(query), jnp.asarray(key)
    if q.ndim != 4 or k.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"query {tuple(q.shape)} and key {tuple(k.shape)}: expected (B, T, N, H) and (B, S, N, H)")
    if scale is None:
        scale = 1.0 / float(np.sqrt(q.shape[-1]))
    logits = jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), k.astype(jnp.float32)) * scale  # (B,N,T,S)
    if bias is not None:
        logits = logits + bias
    return max_logit(logits, mask, per_head=per_head)


# --------------------------------------------------------------------------- 2. sinks


def sink_scores(weights, k: int = 0, *, causal: bool = True) -> Array:
    """Mean attention each (example, head) gives to key position k (Gu et al. 2024).

    Math: alpha_k = (1/(T - k)) sum_{i >= k} A_{i,k}: the mean over the queries that
    can see key k under a causal mask (Gu et al. 2024, "When Attention Sink Emerges
    in Language Models", eval_sink_open_source.py in their code). With
    `causal=False` the mean runs over all T queries.

    Args:
      weights: (B, N, T, S) self-attention weights.
      k: key position (0-based; k = 0 is the first token / BOS).

    Returns:
      (B, N) alpha_k per example and head.
    """
    w = as_weights(weights)
    T = w.shape[2]
    if not 0 <= k < min(T, w.shape[3]):
        raise ValueError(f"k={k} is outside the map: expected 0 <= k < {min(T, w.shape[3])} for weights {tuple(w.shape)}")
    column = w[..., k].astype(jnp.float32)  # (B, N, T) attention received by key k
    if not causal:
        return column.mean(-1)
    sees_k = (jnp.arange(T) >= k).astype(jnp.float32)[None, None, :]  # (1, 1, T)
    return (column * sees_k).sum(-1) / (T - k)


def sink_rate(maps, *, eps: float = 0.3, k: int = 0, causal: bool = True) -> Array:
    """Gu et al. 2024 sink rate Sink_k^eps in percent.

    Math: Sink_k^eps = 100 * mean_{samples, layers, heads} 1[alpha_k > eps], with
    alpha_k from `sink_scores` and eps = 0.3 (Gu et al. 2024).
    A map concentrated on token 0 gives 100; uniform causal attention gives ~0.

    Args:
      maps: {layer: (B, N, T, S)}, a list of maps or one (B, N, T, S) array.
      eps: threshold on alpha_k.
      k: key position (0 = first token).
      causal: average alpha over queries i >= k only (Gu's definition).

    Returns:
      scalar in [0, 100].
    """
    check_number("eps", eps, low=0.0, high=1.0, high_open=True)
    hits = [(sink_scores(w, k, causal=causal) > eps).reshape(-1) for _, w in as_layers(maps)]
    return 100.0 * jnp.concatenate(hits).astype(jnp.float32).mean()


def bos_mass(maps, query_mask=None, *, key_index: int = 0, per_head: bool = False):
    """Mean attention mass on the first token (or `key_index`) from selected queries.

    Math: mean_{b, h, i in query_mask} A_{b,h,i,key_index}  ("BOS mass on dormant
    queries": Guo et al. 2024, active-dormant heads). Select
    non-trigger ("dormant") or trigger rows with `query_mask` to contrast them.

    Args:
      maps: {layer: (B, N, T, S)}, a list of maps or one (B, N, T, S) array.
      query_mask: optional (T,) or (B, T) bool, True = include this query.
      key_index: which key column to measure (default 0 = BOS).
      per_head: return per-head values instead of one number.

    Returns:
      scalar mean over layers, heads, examples and selected queries; with
      `per_head`: (N,) for one array, {layer: (N,)} for a dict/list.
    """
    out = {}
    for name, w in as_layers(maps):
        B, N, T, S = w.shape
        if not 0 <= key_index < S:
            raise ValueError(f"key_index={key_index} is outside the {S} keys of layer {name!r}")
        qm = _query_mask(query_mask, B, T)[:, None, :]  # (B, 1, T)
        col = w[..., key_index].astype(jnp.float32)  # (B, N, T)
        out[name] = _masked_mean(col, jnp.broadcast_to(qm, col.shape), axis=(0, 2))  # (N,)
    return _reduce_layers(maps, out, per_head)


def null_mass(maps, query_mask=None, *, mask=None, per_head: bool = False):
    """Attention mass that goes nowhere: 1 - sum_j A_ij, for normalizers that need not sum to 1.

    Math: mean_{b,h,i} (1 - sum_j A_bhij). Softmax gives 0;
    softmax_1 (Miller 2023), a learnable sink logit and sigmoid attention (Gu et al.
    2024) park mass on an implicit zero-value key, and this measures how much.

    Args:
      maps: {layer: (B, N, T, S)}, a list of maps or one (B, N, T, S) array.
      query_mask: optional (T,) or (B, T) bool, True = include this query.
      mask: optional attention mask broadcastable to (B, N, T, S); rows with no
        visible key are excluded (their weights are all zero by convention).
      per_head: as in `bos_mass`.

    Returns:
      scalar, or per-head values as in `bos_mass`.
    """
    out = {}
    for name, w in as_layers(maps):
        B, N, T, S = w.shape
        valid = jnp.broadcast_to(_query_mask(query_mask, B, T)[:, None, :], (B, N, T))
        if mask is not None:
            valid = valid & broadcast_mask(mask, w.shape).any(-1)
        null = 1.0 - w.astype(jnp.float32).sum(-1)  # (B, N, T)
        out[name] = _masked_mean(null, valid, axis=(0, 2))  # (N,)
    return _reduce_layers(maps, out, per_head)


def _reduce_layers(maps, per_layer: dict, per_head: bool):
    """Mean over layers and heads, or per-head values shaped like the input."""
    if per_head:
        single = not isinstance(maps, (Mapping, list, tuple)) and jnp.ndim(maps) == 4
        return next(iter(per_layer.values())) if single else per_layer
    return jnp.concatenate(list(per_layer.values())).mean()


# --------------------------------------------------------------------------- 3. needle


def needle_mass(weights, query_index, needle_index, *, per_example: bool = False) -> Array:
    """Head-averaged attention from the query position to the needle key.

    Math: mean_h A_{b,h,q_b,n_b}  (Nakanishi 2025, "Scalable-Softmax Is Superior
    for Attention": attention fading with context length).

    Args:
      weights: (B, N, T, S) attention weights.
      query_index: int or (B,) ints: the query row per example.
      needle_index: int or (B,) ints: the needle key per example.
      per_example: return (B,) instead of the batch mean.

    Returns:
      scalar batch mean, or (B,).
    """
    w = as_weights(weights)
    B, N, T, S = w.shape
    for name, index, size in (("query_index", query_index, T), ("needle_index", needle_index, S)):
        if not isinstance(index, jax.core.Tracer):
            values = np.asarray(index)
            if not np.issubdtype(values.dtype, np.integer) or values.size and (values.min() < -size
                                                                                 or values.max() >= size):
                raise ValueError(f"{name} must be ints in [-{size}, {size}) (negative counts from the end) for "
                                 f"weights {tuple(w.shape)}, got {index!r}")
    q = jnp.broadcast_to(jnp.asarray(query_index, dtype=jnp.int32), (B,))
    n = jnp.broadcast_to(jnp.asarray(needle_index, dtype=jnp.int32), (B,))
    rows = w[jnp.arange(B), :, q, :]  # (B, N, S) the query row of every head
    mass = jnp.take_along_axis(rows, n[:, None, None], axis=-1)[..., 0].astype(jnp.float32)  # (B, N)
    mass = mass.mean(-1)  # (B,)
    return mass if per_example else mass.mean()
