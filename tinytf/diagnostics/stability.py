"""Watching a training run for attention-logit growth and entropy collapse.

At too high a learning rate the attention logits q.k/sqrt(d_h) grow by orders of
magnitude and attention rows turn one-hot (Dehghani et al. 2023, "Scaling Vision
Transformers to 22 Billion Parameters"; Zhai et al. 2023, "Stabilizing Transformer
Training by Preventing Attention Entropy Collapse"; Wortsman et al. 2023, "Small-scale
proxies for large-scale Transformer training instabilities"). `attention_watch` logs the
three numbers that show it, on a fixed batch, as a `tinytf.train.fit` callback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from tinytf.capture import capture_attention
from tinytf.checks import check_int
from tinytf.diagnostics.maps import entropy_stats, max_logit


def attention_watch(tokens, *, skip_first: int = 8) -> Callable:
    """A `fit` callback (step, model) -> {"max_logit", "entropy_min", "entropy_mean"} on `tokens`.

    Math, over every causal self-attention layer l and head h of the model on the batch:
      max_logit = max_{l,h,b,i,j<=i} |q_i . k_j| / sqrt(d_h)   (before any soft-cap, bias or mask),
      Ent_lh = mean_{b, i >= skip_first} -sum_j A_ij log A_ij   (nats; Zhai et al.'s entropy),
      entropy_mean = mean_{l,h} Ent_lh (the average Zhai et al. plot),
      entropy_min = min_{l,h} Ent_lh (the sharpest head).

    Args:
      tokens: (B, T) int tokens the model reads causally (`model(tokens)`).
      skip_first: causal rows i < skip_first see few keys and have a trivially low
        entropy; they are left out.

    Returns:
      callback(step, model) -> dict of three scalars.
    """
    skip_first = check_int("skip_first", skip_first, low=0)
    if jnp.ndim(tokens) != 2 or skip_first >= jnp.shape(tokens)[1]:
        raise ValueError(f"tokens has shape {jnp.shape(tokens)}: expected (B, T) with T > skip_first={skip_first}")

    def watch(step, model) -> dict:
        return _summarise(*capture_attention(model, tokens, with_logits=True), skip_first=skip_first)

    return watch


@functools.partial(jax.jit, static_argnames="skip_first")  # one program shared by every watch, not ~90 ops a call
def _summarise(weights, logits, *, skip_first: int) -> dict:
    T = next(iter(logits.values())).shape[-1]
    causal = jnp.tril(jnp.ones((T, T), bool))[None, None]  # (1, 1, T, T)
    entropy = entropy_stats(weights, is_causal=True, skip_first=skip_first)
    return {"max_logit": max_logit(logits, causal), "entropy_min": entropy["entropy_min"],
            "entropy_mean": entropy["entropy_mean"]}


__all__ = ["attention_watch"]
