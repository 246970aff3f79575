"""A one-query retriever for the needle-in-a-haystack task (`tinytf.data.needle_haystack`).

The smallest model in which attention dilution shows (Nakanishi 2025, "Scalable-Softmax
Is Superior for Attention"): one query token attends over n (key, value) items and a
small MLP reads the value class off what it retrieved. Items are embedded
compositionally, E_a(a) + E_b(b) + E_v(v) for sub-keys a, b and value v, so that
"near miss" distractors sharing one sub-key with the needle compete for attention; the
query is E'_a(a) + E'_b(b). There is no positional encoding: the task does not depend on
order, so the only thing that changes with n is the number of keys.

Items arrive left-aligned with padding at the end (`valid`); the model right-aligns them
(padding first), so that the query sits just after the last real item and a causal or
windowed variant sees the nearest items. `needle_slot` says where the needle then is.
"""

from __future__ import annotations

import jax
from flax import nnx

from tinytf.checks import check_int
from tinytf.nn import Linear, MultiHeadAttention
from tinytf.variants import AttentionConfig, get_variant

Array = jax.Array


class NeedleRetriever(nnx.Module):
    """Query -> attention over the items -> LayerNorm + ReLU MLP -> value class logits.

    Args:
      attention: an AttentionConfig or variant name (position must be "none").
      d_model: width D; num_heads: heads of the one attention layer (1 in the dilution toy).
      num_subkeys, num_values: as in `needle_haystack`.
    """

    def __init__(self, attention: AttentionConfig | str | None = None, *, d_model: int = 64, num_heads: int = 1,
                 num_subkeys: int = 8, num_values: int = 16, rngs: nnx.Rngs):
        for name, value in (("d_model", d_model), ("num_heads", num_heads), ("num_subkeys", num_subkeys),
                            ("num_values", num_values)):
            check_int(name, value, low=1)
        attention = get_variant(attention)
        if attention.position != "none":
            raise ValueError(f"attention.position={attention.position!r}: the haystack has no order; use 'none'")
        unit = dict(embedding_init=nnx.initializers.normal(1.0), rngs=rngs)  # N(0, 1) embeddings
        self.item_a, self.item_b = nnx.Embed(num_subkeys, d_model, **unit), nnx.Embed(num_subkeys, d_model, **unit)
        self.item_value = nnx.Embed(num_values, d_model, **unit)
        self.query_a, self.query_b = nnx.Embed(num_subkeys, d_model, **unit), nnx.Embed(num_subkeys, d_model, **unit)
        self.attn = MultiHeadAttention(d_model, num_heads, config=attention, rngs=rngs)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.hidden = Linear(d_model, d_model, rngs=rngs)
        self.readout = Linear(d_model, num_values, rngs=rngs)

    def __call__(self, batch: dict) -> Array:
        """batch from `needle_haystack` -> (B, num_values) logits of the needle's value."""
        keys, values = batch["item_keys"][:, ::-1], batch["item_values"][:, ::-1]  # right-aligned (B, M, ...)
        items = self.item_a(keys[..., 0]) + self.item_b(keys[..., 1]) + self.item_value(values)  # (B, M, D)
        query = (self.query_a(batch["query"][:, 0]) + self.query_b(batch["query"][:, 1]))[:, None]  # (B, 1, D)
        mask = batch["valid"][:, ::-1][:, None, None, :]  # (B, 1, 1, M): padding may not be attended
        h = self.attn(query, items, mask=mask)[:, 0]  # (B, D)
        return self.readout(jax.nn.relu(self.hidden(self.norm(h))))


def needle_slot(batch: dict) -> Array:
    """(B,) the needle's key index among the right-aligned items the model attends over."""
    return batch["valid"].shape[1] - 1 - batch["needle_index"]


__all__ = ["NeedleRetriever", "needle_slot"]
