"""QK-clip (Kimi Team 2025, "Kimi K2: Open Agentic Intelligence", arXiv 2507.20534, MuonClip).

After every optimiser update, each attention head h whose largest pre-softmax logit in
the step's forward pass exceeded tau gets its query and key projections rescaled:

    S_h     = max_{b, i, j valid} q_i^h . k_j^h / sqrt(d_h)   (signed, the paper's S_max)
    gamma_h = min(1, tau / S_h)
    W_q^h <- sqrt(gamma_h) W_q^h,   W_k^h <- sqrt(gamma_h) W_k^h   (and their biases)

so every logit of that head, S_h included, is multiplied by gamma_h (RoPE is linear and
commutes with the scale); heads under tau are left alone, and so is the optimiser state.

Two pieces, used together with `fit`:
  `with_head_max_logits(loss_fn)` records S_h in the step's own forward pass (no second
  forward: the logits the clip reads are exactly those the gradient saw, as in the paper)
  and returns them as the metric "head_max_logit", shape (L, N), one row per
  `MultiHeadAttention` in `nnx.iter_modules` order;
  `qk_clip(tau)` is the `post_update` hook that reads that metric and rescales.

    fit(model, data, loss_fn=with_head_max_logits(loss_fn), post_update=qk_clip(100.0), ...)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.capture import record_attention
from tinytf.nn import MultiHeadAttention
from tinytf.train.step import unpack_loss

METRIC = "head_max_logit"
"""The metric name `with_head_max_logits` writes and `qk_clip` reads."""


def _attention_layers(model: nnx.Module) -> list[tuple[str, MultiHeadAttention]]:
    """(name, layer) for every attention layer, named as `tinytf.capture` names them, in iter_modules order."""
    return [(".".join(str(p) for p in path) or "attn", m) for path, m in nnx.iter_modules(model)
            if isinstance(m, MultiHeadAttention)]


def head_max_logits(logits: dict, layers: list, *, causal: bool = True) -> jax.Array:
    """{name or "name#i": logits (B, N, T, S)} -> (L, N): each layer's per-head signed max over valid pairs.

    Valid: j <= i + S - T (causal, bottom-right aligned) or every pair. A layer called
    several times takes the max over its calls; a layer that did not run gets -inf.
    """
    rows = []
    for name, layer in layers:
        calls = [v for k, v in logits.items() if k == name or k.startswith(name + "#")]
        row = jnp.full((layer.num_heads,), -jnp.inf, jnp.float32)
        for s in calls:
            T, S = s.shape[-2:]
            if causal:
                s = jnp.where(jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + (S - T), s, -jnp.inf)
            row = jnp.maximum(row, s.astype(jnp.float32).max(axis=(0, 2, 3)))
        rows.append(row)
    return jnp.stack(rows)


def with_head_max_logits(loss_fn: Callable, *, causal: bool = True) -> Callable:
    """Wrap `loss_fn(model, batch)` so its metrics also hold "head_max_logit" (L, N), from its own forward pass.

    The attention layers record their logits (`tinytf.capture.record_attention`, dense
    path) while loss_fn runs; nothing is recomputed. `causal`: only pairs j <= i count
    (a causal LM); False: every pair (no mask is known to this wrapper).
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (model, batch) -> loss, got {loss_fn!r}")

    def wrapped(model, batch):
        out, _, logits = record_attention(loss_fn, model, with_logits=True)(model, batch)
        loss, metrics = unpack_loss(out)
        if METRIC in metrics:
            raise ValueError(f"loss_fn already returns a metric named {METRIC!r}")
        layers = _attention_layers(model)
        if not layers:
            raise ValueError(f"{type(model).__name__} has no tinytf.nn.MultiHeadAttention: nothing to measure")
        return loss, {**metrics, METRIC: jax.lax.stop_gradient(head_max_logits(logits, layers, causal=causal))}

    return wrapped


def qk_clip_scales(max_logits: jax.Array, tau: float) -> jax.Array:
    """gamma = min(1, tau / S), elementwise: the factor each head's logits are multiplied by."""
    s = jnp.asarray(max_logits, jnp.float32)
    return jnp.where(s > tau, tau / jnp.where(s > tau, s, 1.0), 1.0)


def _scale_heads(linear, factor: jax.Array, head_dim: int) -> None:
    """Multiply output columns h*H:(h+1)*H of `linear` (kernel and bias) by factor[h]."""
    per_column = jnp.repeat(factor, head_dim)
    linear.kernel[...] = linear.kernel[...] * per_column[None, :].astype(linear.kernel.dtype)
    if linear.bias is not None:
        linear.bias[...] = linear.bias[...] * per_column.astype(linear.bias.dtype)


def qk_clip(tau: float) -> Callable:
    """The `fit(post_update=...)` hook: rescale W_q^h and W_k^h by sqrt(gamma_h) for every head over tau.

    Reads outputs["head_max_logit"] (L, N) from `with_head_max_logits`. Needs plain
    projections: one key head per query head (no grouped-query sharing), no QK-LayerNorm
    (it would undo the scale) and no sigma-Reparam (the kernel's scale is divided out).
    """
    tau = float(tau)
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")

    def hook(model, outputs) -> None:
        if METRIC not in outputs:
            raise KeyError(f"qk_clip needs the metric {METRIC!r} (L, N): train on "
                           f"with_head_max_logits(loss_fn); the step's outputs are {sorted(outputs)}")
        layers = _attention_layers(model)
        s = outputs[METRIC]
        if s.shape != (len(layers), layers[0][1].num_heads if layers else 0):
            raise ValueError(f"outputs[{METRIC!r}] has shape {s.shape}, expected (layers, heads) = "
                             f"({len(layers)}, heads) for this model")
        for (name, layer), gamma in zip(layers, qk_clip_scales(s, tau)):
            cfg = layer.config
            if layer.num_kv_heads != layer.num_heads or cfg.qk_norm or cfg.sigma_reparam:
                raise ValueError(f"qk_clip cannot rescale {name}: num_kv_heads={layer.num_kv_heads} (needs "
                                 f"{layer.num_heads}), qk_norm={cfg.qk_norm}, sigma_reparam={cfg.sigma_reparam} "
                                 "(needs plain projections)")
            root = jnp.sqrt(gamma)
            _scale_heads(layer.query_proj, root, layer.head_dim)
            _scale_heads(layer.key_proj, root, layer.head_dim)

    return hook


__all__ = ["METRIC", "head_max_logits", "with_head_max_logits", "qk_clip_scales", "qk_clip"]
