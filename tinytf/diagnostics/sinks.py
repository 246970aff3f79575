"""Attention sinks: which head is a sink.

Reading order:
  1. `active_dormant_head` — the head with the strongest active/dormant signature
     (Guo et al. 2024, "Active-Dormant Attention Heads"): its *dormant* queries park
     their mass on the sink, its *active* queries look elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.diagnostics.maps import bos_mass

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


__all__ = ["active_dormant_head"]
