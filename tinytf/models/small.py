"""Two small models the lessons study: an attention-only language model and a CLS classifier.

- `AttentionOnlyLM`: token embeddings -> attention-only blocks (no MLP) -> LayerNorm ->
  unembedding, causal. The "attention-only transformer" of Elhage et al. 2021 ("A
  mathematical framework for transformer circuits") in which Olsson et al. 2022 ("In-context
  learning and induction heads") find previous-token and induction heads; positions come
  from the attention config (RoPE by default in the lessons).
- `SequenceClassifier`: token + learned position embeddings -> a bidirectional
  `tinytf.nn.Encoder` -> a linear head read at position 0 (a CLS token, as BERT; Devlin
  et al. 2019). Every head has a `HeadGate`, so `tinytf.diagnostics` can prune it
  (Michel et al. 2019).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.checks import check_int
from tinytf.nn import Block, Encoder, LearnedPositions, Linear
from tinytf.variants import AttentionConfig

Array = jax.Array


class AttentionOnlyLM(nnx.Module):
    """tokens (B, T) -> (B, T, V) next-token logits through `num_layers` attention-only causal blocks."""

    def __init__(self, vocab_size: int, d_model: int, num_heads: int, *, num_layers: int = 2,
                 attention: AttentionConfig | None = None, rngs: nnx.Rngs):
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("num_heads", num_heads),
                            ("num_layers", num_layers)):
            check_int(name, value, low=1)
        self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        self.blocks = nnx.List([Block(d_model, num_heads, attention=attention, use_mlp=False, rngs=rngs)
                                for _ in range(num_layers)])
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.unembed = Linear(d_model, vocab_size, rngs=rngs)

    def __call__(self, tokens: Array) -> Array:
        h = self.embed(tokens)  # (B, T, D)
        for block in self.blocks:
            h = block(h, is_causal=True)
        return self.unembed(self.norm(h))  # (B, T, V)


class SequenceClassifier(nnx.Module):
    """tokens (B, T) -> (B, num_classes) logits read at position 0 (the CLS token)."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, num_heads: int, *, num_layers: int = 2,
                 num_classes: int = 2, attention: AttentionConfig | None = None, rngs: nnx.Rngs):
        for name, value in (("vocab_size", vocab_size), ("max_len", max_len), ("num_classes", num_classes),
                            ("num_layers", num_layers)):
            check_int(name, value, low=1)
        self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        self.positions = LearnedPositions(max_len, d_model, rngs=rngs)
        self.encoder = Encoder(num_layers, d_model, num_heads, attention=attention, rngs=rngs)
        self.head = Linear(d_model, num_classes, rngs=rngs)

    def __call__(self, tokens: Array) -> Array:
        h = self.embed(tokens) + self.positions(jnp.arange(tokens.shape[1]))  # (B, T, D)
        return self.head(self.encoder(h)[:, 0])  # (B, classes)


__all__ = ["AttentionOnlyLM", "SequenceClassifier"]
