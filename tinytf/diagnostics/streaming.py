"""Scoring a language model under a KV-cache policy: the StreamingLLM experiment as one call.

Xiao et al. 2023 ("Efficient Streaming Language Models with Attention Sinks", ICLR 2024)
score text far beyond the training length with three caches: everything (dense), a
sliding window of the last W tokens, and the window plus the first few tokens (the
"attention sinks"). `streaming_report` runs each policy through
`tinytf.models.streaming_forward` once and returns the mean negative log-likelihood of
the tokens past a point, the NLL at every position, and (optionally) the entropy of
selected attention rows of one layer over the cache slots: the entropy rises when a
head that used to park its mass on an evicted sink has to spread it elsewhere.
`eviction_report` runs StreamingLLM's three policies and returns what evicting the sink
costs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.diagnostics.common import xlogx
from tinytf.models.lm import streaming_forward

Array = jax.Array


def streaming_report(model, tokens, policies: Mapping[str, Mapping], *, score_from: int, prefix: int = 0,
                     layer: str | None = None, query_mask=None) -> dict[str, dict]:
    """NLL (and attention entropy) of a long sequence under several KV-cache policies.

    Math, per policy: nll_t = -log p(x_{t+1} | cache at time t); "nll" is the mean of
    nll_t over the examples and the tokens x_{score_from}, ..., x_{L-1} (StreamingLLM's
    perplexity beyond the training length, in nats). "entropy" is
    -sum_s A_{b,h,t,s} log A_{b,h,t,s} over the cache slots s, averaged over the
    examples, the heads of `layer` and the queries t >= score_from where `query_mask`
    is True.

    Args:
      model: a `tinytf.models.CausalLM`.
      tokens: (B, prefix + L) int: `prefix` tokens (e.g. register tokens, kept by every
        policy through its `sink_tokens`) followed by the L tokens that are scored.
      policies: {name: keyword arguments of `streaming_forward`}, e.g.
        {"dense": {}, "window": {"window": 16}, "window+BOS": {"window": 15, "sink_tokens": 1}}.
      score_from: index (among the L scored tokens) of the first token whose NLL counts.
      prefix: number of leading tokens that are not scored.
      layer: a layer name ("blocks.1.attn") whose row entropy to measure; None skips it.
      query_mask: optional (B, L) bool over the scored tokens' queries (True = include).

    Returns:
      {policy: {"nll": float, "nll_by_position": (L - 1,) numpy (mean over examples;
      entry t scores token t + 1), and with `layer`, "entropy": float}}.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not 0 <= prefix < tokens.shape[1] - 1:
        raise ValueError(f"tokens must be (B, prefix + L) with L >= 2 scored tokens; got shape {tokens.shape} "
                         f"and prefix={prefix}")
    L = tokens.shape[1] - prefix
    if not 1 <= score_from < L:
        raise ValueError(f"score_from={score_from} must be in [1, {L}) for L={L} scored tokens")
    if not isinstance(policies, Mapping) or not policies:
        raise ValueError(f"policies must be a non-empty dict {{name: streaming_forward kwargs}}, got {policies!r}")
    rows = None
    if layer is not None and query_mask is not None:
        rows = jnp.asarray(query_mask, bool)
        if rows.shape != (tokens.shape[0], L):
            raise ValueError(f"query_mask has shape {rows.shape}: expected (B, L) = ({tokens.shape[0]}, {L})")
        rows = rows[:, None, score_from:]  # (B, 1, L - score_from)
    scored = tokens[:, prefix:]  # (B, L)
    out = {}
    for name, policy in policies.items():
        if layer is None:
            logits = streaming_forward(model, tokens, **policy)
        else:
            logits, weights, _ = streaming_forward(model, tokens, return_attention=True, **policy)
            if layer not in weights:
                raise ValueError(f"layer {layer!r} not in the model's attention layers {list(weights)}")
        logp = jax.nn.log_softmax(logits[:, prefix:-1].astype(jnp.float32), axis=-1)  # (B, L-1, V)
        nll = -jnp.take_along_axis(logp, scored[:, 1:, None], axis=-1)[..., 0]  # (B, L-1)
        report = {"nll": float(nll[:, score_from - 1:].mean()), "nll_by_position": np.asarray(nll.mean(0))}
        if layer is not None:
            w = weights[layer][:, :, prefix + score_from:]  # (B, N, L - score_from, C) over the cache slots
            entropy = -xlogx(w).sum(-1)  # (B, N, L - score_from)
            valid = jnp.ones((1, 1, 1), bool) if rows is None else rows
            valid = jnp.broadcast_to(valid, entropy.shape[:1] + (1,) + entropy.shape[2:])
            report["entropy"] = float(jnp.sum(entropy * valid) / (valid.sum() * w.shape[1]))
        out[name] = report
    return out


def eviction_report(model, tokens, *, window: int, score_from: int, prefix: int = 0, layer: str | None = None,
                    query_mask=None, sink_label: str = "BOS") -> tuple[dict, dict]:
    """StreamingLLM's experiment (Xiao et al. 2023): dense, a window, and the window plus the sink.

    Policies: "dense" keeps every token; "window" keeps the `prefix` leading tokens and the
    last `window` tokens; "window+<sink>" keeps the prefix, the sink (the first scored token)
    and the last `window - 1` (same cache size). "eviction cost" = NLL(window) -
    NLL(window+<sink>) in nats per token past `score_from`.

    Args:
      model, tokens, score_from, prefix, layer, query_mask: as in `streaming_report`.
      window: cache size (>= 2).
      sink_label: name of the sink in the keys.

    Returns:
      ({"NLL <policy>": float, "H <policy>": float (with `layer`), "eviction cost": float},
       {policy: (L - 1,) mean NLL per position}).
    """
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    policies = {"dense": dict(window=None, sink_tokens=0), "window": dict(window=window, sink_tokens=prefix),
                f"window+{sink_label}": dict(window=window - 1, sink_tokens=prefix + 1)}
    report = streaming_report(model, tokens, policies, score_from=score_from, prefix=prefix, layer=layer,
                              query_mask=query_mask)
    out = {}
    for name, r in report.items():
        out[f"NLL {name}"] = r["nll"]
        if "entropy" in r:
            out[f"H {name}"] = r["entropy"]
    out["eviction cost"] = out["NLL window"] - out[f"NLL window+{sink_label}"]
    return out, {name: r["nll_by_position"] for name, r in report.items()}


__all__ = ["streaming_report", "eviction_report"]
