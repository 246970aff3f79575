"""Attention sinks: which head is a sink.

Reading order:
  1. `active_dormant_head` — the head with the strongest active/dormant signature
     (Guo et al. 2024, "Active-Dormant Attention Heads"): its *dormant* queries park
     their mass on the sink, its *active* queries look elsewhere.
  2. `lm_states` — the residual stream after every block of a `tinytf.models.CausalLM`
     and every layer's value vectors, for the two measurements below.
  3. `massive_activations` — per layer, how the sink token's hidden state stands out:
     its norm against the other tokens' (Sun et al. 2024, "Massive Activations in Large
     Language Models": a few activations ~1e3-1e4x the median sit on the first token).
  4. `value_norm_ratio` — per layer and head, the norm of the sink token's value vector
     against the other tokens' (Sun et al. 2024; Gu et al. 2024): a head that parks its
     mass on a small value adds little to the residual stream, so the sink is a near no-op.
  5. `sequence_maps`, `sink_report`, `sink_recorder` — the three measured together on one
     model (maps among the real tokens when register tokens are prepended), and a `fit`
     callback that follows the sink rate and the sink's mass during training.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf.capture import capture_attention
from tinytf.diagnostics.maps import bos_mass, null_mass, sink_rate

Array = jax.Array


def active_dormant_head(maps, dormant, active, *, key_index: int = 0) -> dict:
    """The head whose dormant queries out-attend its active queries on one key the most.

    Math: for every layer l and head h, gap_{l,h} = m_{l,h}(dormant) - m_{l,h}(active),
    with m the mean attention on key `key_index` over the selected queries (`bos_mass`);
    returns argmax_{l,h} gap (the first layer wins ties). This is Guo et al. 2024's
    active/dormant signature: on Bigram-Backcopy, the copying head attends to the
    previous token on triggers (active) and parks on BOS everywhere else (dormant).

    Args:
      maps: {layer: (B, N, T, S)} (e.g. from `tinytf.capture.capture_attention`).
      dormant, active: (T,) or (B, T) bool query selections.
      key_index: the sink key (default 0, the first token).

    Returns:
      {"layer": name, "head": int, "dormant": float, "active": float} — the chosen head's
      mean mass on the key from its dormant and from its active queries.
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError(f"maps must be a non-empty dict {{layer: (B, N, T, S)}}, got {type(maps).__name__}")
    per_head = {name: (np.asarray(d), np.asarray(bos_mass(maps[name], active, key_index=key_index, per_head=True)))
                for name, d in bos_mass(maps, dormant, key_index=key_index, per_head=True).items()}  # (N,), (N,)
    gap = {name: d - a for name, (d, a) in per_head.items()}  # (N,) per layer
    layer = max(gap, key=lambda name: gap[name].max())
    head = int(gap[layer].argmax())
    return {"layer": layer, "head": head, "dormant": float(per_head[layer][0][head]),
            "active": float(per_head[layer][1][head])}


def lm_states(model, tokens) -> dict:
    """The residual stream and the value vectors of every layer of a pre-/post-/no-norm `CausalLM`.

    Runs the parallel forward pass block by block (positions 0..T-1, causal), the same
    computation as `model(tokens)`.

    Args:
      model: a `tinytf.models.CausalLM`.
      tokens: (B, T) int.

    Returns:
      {"hidden": [(B, T, D)] * (L + 1) — entry 0 the embeddings, entry l the output of
      block l; "values": {"blocks.l.attn": (B, K, T, H)} — the value vectors of layer l
      (value_proj of the block's attention input, K key/value heads of size H)}.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (B, T) int, got shape {tokens.shape}")
    return _lm_states(model, tokens)  # one compiled program, not one per op


@nnx.jit
def _lm_states(model, tokens) -> dict:
    positions = jnp.arange(tokens.shape[1])
    h = model._embed(tokens, positions)  # (B, T, D)
    hidden, values = [h], {}
    for i, block in enumerate(model.blocks):
        x = block.norms[0](h) if block.norm_mode == "pre" else h  # the attention's input
        attn = block.attn
        values[f"blocks.{i}.attn"] = attn._heads(attn.value_proj(x), attn.num_kv_heads).transpose(0, 2, 1, 3)
        h = block(h, is_causal=True, positions=positions)
        hidden.append(h)
    return {"hidden": hidden, "values": values}


def massive_activations(hidden, *, sink_index: int = 0, exclude: int = 0) -> dict:
    """Per layer: how much the sink token's hidden state stands out (Sun et al. 2024).

    Math, for the hidden states h (B, T, D) of one layer: norm_ratio = mean_b ||h_{b,s}|| /
    median_{b, t} ||h_{b,t}|| with s = `sink_index` and t over the tokens after the sink
    (and after the first `exclude` positions, e.g. register tokens); max_ratio = mean_b
    max_d |h_{b,s,d}| / median_{b,t,d} |h_{b,t,d}|, Sun et al.'s "massive activation"
    (one coordinate of the sink token ~1e3-1e4x the median activation in LLMs).

    Args:
      hidden: [(B, T, D)] per layer (e.g. `lm_states(model, tokens)["hidden"]`).
      sink_index: position of the sink token (default 0, BOS).
      exclude: positions before this one are left out of the "others" (default none).

    Returns:
      {"norm_ratio": (L,) numpy, "max_ratio": (L,) numpy}, one entry per layer.
    """
    if not isinstance(hidden, (list, tuple)) or not hidden:
        raise ValueError(f"hidden must be a non-empty list of (B, T, D) arrays, got {type(hidden).__name__}")
    norm_ratio, max_ratio = [], []
    for h in hidden:
        h = np.asarray(h, np.float64)
        if h.ndim != 3 or not 0 <= sink_index < h.shape[1] - 1:
            raise ValueError(f"each hidden state must be (B, T, D) with the sink_index={sink_index} "
                             f"before the last position, got shape {h.shape}")
        first = max(exclude, sink_index + 1)
        norms = np.linalg.norm(h, axis=-1)  # (B, T)
        norm_ratio.append(norms[:, sink_index].mean() / np.median(norms[:, first:]))
        max_ratio.append(np.abs(h[:, sink_index]).max(-1).mean() / np.median(np.abs(h[:, first:])))
    return {"norm_ratio": np.array(norm_ratio), "max_ratio": np.array(max_ratio)}


def value_norm_ratio(values, *, sink_index: int = 0, exclude: int = 0) -> dict:
    """Per layer and head: the sink token's value norm over the other tokens' (median).

    Math, for values v (B, K, T, H) of one layer: ratio_k = mean_b ||v_{b,k,s}|| /
    median_{b,t} ||v_{b,k,t}||, t over the tokens after the sink (and after `exclude`).
    A ratio well below 1 means a head that parks its attention on the sink adds a small
    vector to the residual stream (Sun et al. 2024, §4; Gu et al. 2024's small sink values).

    Args:
      values: {layer: (B, K, T, H)} (e.g. `lm_states(model, tokens)["values"]`).
      sink_index, exclude: as in `massive_activations`.

    Returns:
      {layer: (K,) numpy} ratios.
    """
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"values must be a non-empty dict {{layer: (B, K, T, H)}}, got {type(values).__name__}")
    out = {}
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        if v.ndim != 4 or not 0 <= sink_index < v.shape[2] - 1:
            raise ValueError(f"values[{name!r}] must be (B, K, T, H) with the sink_index={sink_index} before "
                             f"the last position, got shape {v.shape}")
        norms = np.linalg.norm(v, axis=-1)  # (B, K, T)
        rest = norms[:, :, max(exclude, sink_index + 1):].transpose(1, 0, 2).reshape(v.shape[1], -1)  # (K, B*T')
        out[name] = norms[:, :, sink_index].mean(0) / np.median(rest, axis=1)
    return out


def sequence_maps(model, tokens, prefix: int = 0) -> dict:
    """{layer: (B, N, T, T)} attention among the tokens after the first `prefix` ones.

    The rows and columns of the `prefix` leading tokens (e.g. register tokens, Darcet et
    al. 2024) are cut away, so the mass a row gives them shows up as off-sequence mass
    1 - sum_j A_ij (`null_mass`), like the null key of softmax_1.

    Args:
      model: a model that `tinytf.capture.capture_attention` can run on `tokens`.
      tokens: (B, prefix + T) int.
      prefix: number of leading tokens to cut away (>= 0).
    """
    if not isinstance(prefix, int) or prefix < 0:
        raise ValueError(f"prefix must be an int >= 0, got {prefix!r}")
    return {name: w[:, :, prefix:, prefix:] for name, w in capture_attention(model, tokens).items()}


def sink_report(model, tokens, dormant, active, *, prefix: int = 0, active_label: str = "active",
                sink_label: str = "BOS") -> dict:
    """Every sink measurement of one model on one batch, in one dict.

    With maps A among the real tokens (`sequence_maps`) and the sink at the first real
    token: "<sink> dormant" / "<sink> <active>" = mean mass on the sink from the dormant /
    active queries (`bos_mass`); "AD <sink> dormant" / "AD <sink> <active>" the same in the
    active/dormant head (`active_dormant_head`, Guo et al. 2024) and "AD layer" its layer;
    "sink rate %" = Gu et al. 2024's Sink_1^0.3 (`sink_rate`); "null dormant" = the dormant
    rows' off-sequence mass (`null_mass`); "<sink> norm ratio" = the largest, over blocks,
    of the sink's hidden-state norm over the median token's (`massive_activations`, Sun et
    al. 2024; the embeddings are left out); "<sink> value ratio AD" = the sink's value norm
    over the median token's in the AD head (`value_norm_ratio`).

    Args:
      model: a `tinytf.models.CausalLM`.
      tokens: (B, prefix + T) int, the sink at position `prefix`.
      dormant, active: (B, T) bool query selections among the T real tokens.
      prefix: leading tokens (registers) cut from the maps and from the "others".
      active_label, sink_label: names used in the keys (e.g. "trigger", "BOS").

    Returns:
      {key: float} and "AD layer": str.
    """
    maps = sequence_maps(model, tokens, prefix)
    ad = active_dormant_head(maps, dormant, active)
    states = lm_states(model, tokens)
    norm = massive_activations(states["hidden"], sink_index=prefix, exclude=prefix)["norm_ratio"]  # (L + 1,)
    value = value_norm_ratio(states["values"], sink_index=prefix, exclude=prefix)[ad["layer"]][ad["head"]]
    s, a = sink_label, active_label
    return {f"{s} dormant": float(bos_mass(maps, dormant)), f"{s} {a}": float(bos_mass(maps, active)),
            f"AD {s} dormant": ad["dormant"], f"AD {s} {a}": ad["active"], "sink rate %": float(sink_rate(maps)),
            "null dormant": float(null_mass(maps, dormant)), "AD layer": ad["layer"],
            f"{s} norm ratio": float(norm[1:].max()), f"{s} value ratio AD": float(value)}


def sink_recorder(tokens, dormant, *, prefix: int = 0, sink_label: str = "BOS"):
    """A `tinytf.train.fit` callback: Gu et al.'s sink rate and the dormant rows' sink mass.

    Args:
      tokens: (B, prefix + T) int, a fixed probe batch.
      dormant: (B, T) bool dormant queries among the T real tokens.
      prefix, sink_label: as in `sink_report`.

    Returns:
      record(step, model) -> {"sink rate %": scalar, "<sink> dormant": scalar}.
    """
    def record(step, model):
        maps = sequence_maps(model, tokens, prefix)
        return {"sink rate %": sink_rate(maps), f"{sink_label} dormant": bos_mass(maps, dormant)}

    return record


__all__ = ["active_dormant_head", "lm_states", "massive_activations", "value_norm_ratio", "sequence_maps",
           "sink_report", "sink_recorder"]
