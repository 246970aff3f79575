"""Seeing attention: every attention layer can record its weights; one function collects them.

Models never collect anything themselves. A `MultiHeadAttention` *sows* its weights
(B, N, T, S) as an `AttentionWeights` intermediate, and only while it is recording;
`capture_attention(model, *inputs)` switches recording on for a copy of the model
inside `jax.jit`, runs it under Flax's `nnx.capture`, and returns

    {"blocks.0.attn": (B, N, T, S), "blocks.1.attn": ..., "decoder.1.cross_attn": ...}

named by each layer's path in the model, in the order the layers ran. When nobody
captures, recording costs one Python `if` at trace time, and the layers are free to
take the flash path, which never forms the weights at all.

Reading order: the intermediate types, `Recording` and `sow_attention` (what a layer
does), `record_attention` (the mechanism, usable inside any traced function:
`tinytf.models.lm` uses it while streaming), then `capture_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class AttentionWeights(nnx.Intermediate):
    """Attention weights (B, N, T, S) sown by a recording attention layer."""


class AttentionLogits(nnx.Intermediate):
    """Pre-normalisation logits q.k / sqrt(H) (B, N, T, S), before bias and mask, sown on request."""


RECORD_ATTR = "record_attention"
"""The attribute an attention layer reads to know whether to sow: None (off) or a `Recording`."""


@dataclass
class Recording:
    """What a recording layer needs to know: record logits too? And where to note its calls."""

    logits: bool = False
    calls: list = field(default_factory=list)  # id() of each recording layer, in call order


def sow_attention(layer: nnx.Module, weights: Array, logits: Array | None = None) -> None:
    """Called by an attention layer while it records: sow its weights (and logits), note the call."""
    recording = getattr(layer, RECORD_ATTR)
    layer.sow(AttentionWeights, "weights", weights)
    if recording.logits:
        layer.sow(AttentionLogits, "logits", logits)
    recording.calls.append(id(layer))


def _recording_layers(model: nnx.Module) -> list:
    return [(path, m) for path, m in nnx.iter_modules(model) if hasattr(m, RECORD_ATTR)]


def record_attention(fn: Callable, model: nnx.Module, *, with_logits: bool = False) -> Callable:
    """Wrap `fn` so that every attention layer of `model` records while it runs.

    Args:
      fn: a function whose first argument is `model` (the layers sow into it).
      model: the module whose attention layers record (a traced copy inside jit is
        the usual case; the layers' switches are restored afterwards either way).
      with_logits: also record the logits q.k/sqrt(H) (before bias and mask).

    Returns:
      A function with fn's arguments returning (fn's result, {name: weights}) or, with
      with_logits, (result, {name: weights}, {name: logits}), in the order the layers
      ran. A layer called k > 1 times gives "name", "name#1", ..., "name#k-1".
    """
    types = (AttentionWeights, AttentionLogits) if with_logits else (AttentionWeights,)

    def run(*args, **kwargs):
        layers = _recording_layers(model)
        recording = Recording(logits=with_logits)
        for _, layer in layers:
            setattr(layer, RECORD_ATTR, recording)
        try:
            result, *states = nnx.capture(fn, *types)(*args, **kwargs)
        finally:
            for _, layer in layers:
                setattr(layer, RECORD_ATTR, None)
        return (result, *(_in_call_order(state, layers, recording.calls) for state in states))

    return run


def _in_call_order(state, layers: list, calls: list) -> dict[str, Array]:
    """Sown values {(path..., leaf): Variable(tuple of calls)} -> {"name" or "name#i": array}, in call order."""
    by_path = {tuple(path[:-1]): variable.get_value() for path, variable in nnx.to_flat_state(state)}
    names = {id(layer): ".".join(str(p) for p in path) or "attn" for path, layer in layers}
    values = {id(layer): by_path.get(tuple(path), ()) for path, layer in layers}
    out, seen = {}, {}
    for layer_id in calls:
        i = seen[layer_id] = seen.get(layer_id, -1) + 1
        out[names[layer_id] if i == 0 else f"{names[layer_id]}#{i}"] = values[layer_id][i]
    return out


_CAPTURE_CACHE: dict[Any, Any] = {}


def capture_attention(model: nnx.Module, *inputs, with_logits: bool = False, **kwargs):
    """Run model(*inputs, **kwargs) under jit and return every attention layer's weights.

    Works on any model built from tinytf's attention layers, self- and cross-attention,
    without changes to model code; layers use the dense path while capturing.

    Args:
      model: an nnx.Module.
      *inputs: positional arrays for the model call.
      with_logits: also return the pre-softmax logits q.k/sqrt(H) (before bias/mask).
      **kwargs: keyword arguments for the model call (arrays are traced, other
        values are static).

    Returns:
      {layer_name: weights (B, N, T, S)}, e.g. "blocks.0.attn" or "decoder.1.cross_attn",
      in the order the layers ran; with with_logits=True, a pair (weights, logits).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    graphdef, state = nnx.split(model)
    array_kw = {k: v for k, v in kwargs.items() if isinstance(v, (jax.Array, jnp.ndarray)) or hasattr(v, "shape")}
    static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k not in array_kw))
    try:
        cache_key = (graphdef, static_kw, with_logits, len(inputs), tuple(sorted(array_kw)))
        hash(cache_key)
    except TypeError:
        cache_key = None
    cached = _CAPTURE_CACHE.get(cache_key) if cache_key is not None else None
    if cached is None:  # (a cached graph has recording layers: only a new one is walked for them)
        if not _recording_layers(model):
            raise ValueError(f"{type(model).__name__} has no attention layer that can record its weights "
                             "(build it from tinytf.nn.MultiHeadAttention)")
        names: list[str] = []  # filled while tracing: jit would sort the keys of a returned dict

        def forward(state, inputs, array_kw):
            copy = nnx.merge(graphdef, state)
            _, *maps = record_attention(lambda m: m(*inputs, **array_kw, **dict(static_kw)), copy,
                                        with_logits=with_logits)(copy)
            names[:] = list(maps[0])
            return [[m[n] for n in names] for m in maps]

        cached = (jax.jit(forward), names)
        if cache_key is not None:
            if len(_CAPTURE_CACHE) > 32:
                _CAPTURE_CACHE.clear()
            _CAPTURE_CACHE[cache_key] = cached
    run, names = cached
    maps = [dict(zip(names, arrays)) for arrays in run(state, inputs, array_kw)]
    return (maps[0], maps[1]) if with_logits else maps[0]


__all__ = ["AttentionWeights", "AttentionLogits", "Recording", "sow_attention", "record_attention",
           "capture_attention"]
