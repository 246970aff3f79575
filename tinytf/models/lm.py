"""A causal (GPT-style) language model, with incremental decoding and a StreamingLLM cache.

Reading order:
  1. `LMConfig` and its presets (`tiny`, `micro`);
  2. `CausalLM.__call__`: the parallel, causally masked forward pass used for training
     (decoder-only, pre-norm, as GPT-2, Radford et al. 2019);
  3. the incremental path, with a `tinytf.cache.CachePolicy` deciding which token lives in
     which KV-cache slot, at which position: `CausalLM.generate`, `streaming_forward`, `streaming_nll`.

Positions: a learned table or sinusoids added to the embeddings (Vaswani et al. 2017),
RoPE on queries/keys (Su et al. 2021), an ALiBi bias (Press et al. 2022), or none.

The cache follows StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models
with Attention Sinks"): keep the first `sink_tokens` tokens for ever plus a sliding
window of the last `window` tokens, and give every cached token its position *inside
the cache* (keys are stored before RoPE and rotated at their current cache position).
Decoding is one `lax.scan` over tokens inside one `jax.jit`: no Python loop per token.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf.cache import CachePolicy, KVCache
from tinytf.capture import record_attention
from tinytf.nn import Block, LearnedPositions, Linear
from tinytf.positional import sinusoidal
from tinytf.variants import AttentionConfig, get_variant

Array = jax.Array

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")


# --------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class LMConfig:
    """Shape and switches of a `CausalLM`. Presets: `LMConfig.tiny()`, `LMConfig.micro()`."""

    vocab_size: int = 64
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    max_len: int = 128
    """Longest sequence for "learned"/"sinusoidal" positions; RoPE, ALiBi and none have no limit."""
    mlp_ratio: float = 4.0
    position: str = "learned"
    """"learned" | "sinusoidal" (added to the embeddings) | "rope" | "alibi" (inside attention) | "none"."""
    attention: AttentionConfig | str = AttentionConfig()
    """An AttentionConfig or a variant name ("vanilla", "softmax1", ...); its `position`
    field is set from `position` (leave it "none")."""
    tie_embeddings: bool = False
    """Use the token embedding matrix as the output projection (Press & Wolf 2017)."""
    norm: str = "pre"
    """"pre" (GPT-2, with a final LayerNorm) or "post" (original Transformer)."""
    activation: str = "gelu"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LMConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"LMConfig.d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"LMConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"LMConfig.position must be one of {POSITIONS}, got {self.position!r}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"LMConfig.norm must be 'pre' or 'post', got {self.norm!r}")
        if self.position == "rope" and (self.d_model // self.num_heads) % 2:
            raise ValueError(f"position='rope' needs an even head dim, got d_model/num_heads = "
                             f"{self.d_model}/{self.num_heads} = {self.d_model // self.num_heads}")
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"position='sinusoidal' needs an even d_model, got {self.d_model}")
        attention = get_variant(self.attention)  # a name, "module:fn", a function or a config
        if attention.position not in ("none", self._inner_position):
            raise ValueError(f"attention.position={attention.position!r} conflicts with position="
                             f"{self.position!r}: set LMConfig.position only")
        object.__setattr__(self, "attention", attention)

    @property
    def _inner_position(self) -> str:
        return self.position if self.position in ("rope", "alibi") else "none"

    @property
    def layer_attention(self) -> AttentionConfig:
        """The AttentionConfig the blocks use: `attention` with position rope/alibi/none from `position`."""
        return self.attention.replace(position=self._inner_position)

    def replace(self, **changes) -> "LMConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **overrides) -> "LMConfig":
        """2 layers, d=64, 4 heads, vocab 64: solves the induction task in seconds on a CPU."""
        return cls(**{**dict(vocab_size=64, d_model=64, num_layers=2, num_heads=4, max_len=128), **overrides})

    @classmethod
    def micro(cls, **overrides) -> "LMConfig":
        """2 layers, d=32, 2 heads, MLP x2, vocab 32: for tests and smoke runs."""
        return cls(**{**dict(vocab_size=32, d_model=32, num_layers=2, num_heads=2, max_len=64, mlp_ratio=2.0),
                      **overrides})


# ---------------------------------------------------------------------------- model
class CausalLM(nnx.Module):
    """Decoder-only transformer: embeddings (+ positions) -> Blocks -> LayerNorm -> LM head.

    Blocks live in `self.blocks` (an nnx.List), so `capture_attention` names them
    "blocks.0.attn", "blocks.1.attn", ... The model computes in the dtype of its
    parameters: cast them (e.g. with `jax.tree.map` over `nnx.state(model)` and
    `nnx.update`) to run in bfloat16; attention softmax stays float32 inside.
    """

    def __init__(self, config: LMConfig | None = None, *, rngs: nnx.Rngs):
        config = LMConfig.tiny() if config is None else config
        if not isinstance(config, LMConfig):
            raise TypeError(f"config must be an LMConfig, got {type(config).__name__}")
        self.config = config
        D, V = config.d_model, config.vocab_size
        self.token_embed = nnx.Embed(V, D, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.position_embed = LearnedPositions(config.max_len, D, rngs=rngs) if config.position == "learned" else None
        self.blocks = nnx.List([
            Block(D, config.num_heads, attention=config.layer_attention, mlp_ratio=config.mlp_ratio,
                  norm=config.norm, activation=config.activation, rngs=rngs)
            for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(D, rngs=rngs) if config.norm == "pre" else None
        self.lm_head = None if config.tie_embeddings else Linear(D, V, use_bias=False, rngs=rngs)

    # -- pieces shared by the parallel and the incremental paths
    def _embed(self, tokens: Array, positions: Array) -> Array:
        """tokens (B, T) int, positions (T,) or (B, T) -> (B, T, D) embeddings (+ absolute positions)."""
        # Look the table up directly: nnx.Embed would cast to the dtype it was built with.
        # A token outside 0..V-1 reads NaN (not a wrapped or clipped row): under jit nothing can be
        # checked without a host sync, so it fails loudly instead, and fit's NaN stop names the step.
        V = self.config.vocab_size
        index = jnp.where(tokens < 0, V, tokens)  # jnp.take would wrap negative indices
        h = jnp.take(self.token_embed.embedding[...], index, axis=0, mode="fill", fill_value=jnp.nan)  # (B, T, D)
        if self.config.position == "learned":
            h = h + self.position_embed(positions).astype(h.dtype)
        elif self.config.position == "sinusoidal":
            table = sinusoidal(self.config.max_len, self.config.d_model)  # (max_len, D)
            h = h + jnp.take(table, positions, axis=0).astype(h.dtype)
        return h

    def _logits(self, h: Array) -> Array:
        """(B, T, D) last hidden states -> (B, T, V) logits."""
        if self.final_norm is not None:
            h = self.final_norm(h)
        if self.lm_head is None:  # tied: score against the embedding table
            return h @ self.token_embed.embedding[...].T.astype(h.dtype)  # (B, T, D) @ (D, V)
        return self.lm_head(h)

    def _check_positions(self, needed: int, what: str) -> None:
        """Absolute position tables end at max_len - 1: say so clearly instead of reading garbage."""
        cfg = self.config
        if cfg.position in ("learned", "sinusoidal") and needed > cfg.max_len:
            raise ValueError(
                f"{what} needs positions up to {needed - 1}, but position={cfg.position!r} has a table of "
                f"max_len={cfg.max_len} positions (0..{cfg.max_len - 1}); use a shorter sequence, a larger "
                "max_len, a cache window (generate/streaming with window=) or position='rope'/'alibi'")

    def init_cache(self, batch_size: int, size: int) -> list[KVCache]:
        """An empty KV cache of `size` slots per layer, in the parameters' dtype."""
        dtype = self.token_embed.embedding.dtype
        return [block.attn.init_cache(batch_size, size, dtype) for block in self.blocks]

    # -- the parallel forward pass
    def __call__(self, tokens: Array, *, positions: Array | None = None, mask: Array | None = None) -> Array:
        """Next-token logits for every position, causally masked.

        Args:
          tokens: (B, T) int token ids.
          positions: (T,) or (B, T) int positions; default 0..T-1.
          mask: optional bool, broadcastable to (B, N, T, T), combined (AND) with the
            causal mask, e.g. `tinytf.attention.sliding_window_mask(T, W)` or padding.

        Returns:
          (B, T, V) logits; logits[:, t] predicts tokens[:, t + 1] from tokens[:, :t + 1].
        """
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be a (B, T) integer array, got shape {tokens.shape}, dtype {tokens.dtype}")
        B, T = tokens.shape
        if T < 1:
            raise ValueError(f"tokens must hold at least one position, got shape {tokens.shape}")
        _check_tokens(tokens, self.config.vocab_size)
        if positions is None:
            positions = jnp.arange(T)
            self._check_positions(T, f"a sequence of length T={T}")
        else:
            positions = jnp.asarray(positions)
            if positions.shape not in ((T,), (B, T)):
                raise ValueError(f"positions must have shape (T,)=({T},) or (B, T)=({B}, {T}), got {positions.shape}")
            if not isinstance(positions, jax.core.Tracer) and positions.size:
                self._check_positions(int(positions.max()) + 1, "positions")
        h = self._embed(tokens, positions)
        for block in self.blocks:
            h = block(h, mask=mask, is_causal=True, positions=positions)
        return self._logits(h)

    # -- incremental decoding
    def generate(self, tokens: Array, max_new_tokens: int, *, key: Array | None = None, temperature: float = 0.0,
                 top_k: int | None = None, window: int | None = None, sink_tokens: int = 0,
                 relative_positions: bool = True) -> Array:
        """Extend a prompt token by token with a KV cache (greedy or sampled).

        The prompt is run through the cache in one parallel step (as much of it as fits),
        then one compiled `lax.scan` produces the new tokens.

        Args:
          tokens: (B, P) int prompt, P >= 1.
          max_new_tokens: number of tokens to append.
          key: a JAX random key, needed when temperature > 0.
          temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
          top_k: sample only among the k most likely tokens.
          window: keep only the last `window` tokens in the cache (None = keep all).
          sink_tokens: also keep the first `sink_tokens` tokens (StreamingLLM's attention sinks).
          relative_positions: positions inside the cache (StreamingLLM) rather than in the text.

        Returns:
          (B, P + max_new_tokens) int32: the prompt followed by the generated tokens.
        """
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] < 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be a (B, P) integer prompt with P >= 1, got shape {tokens.shape}, "
                             f"dtype {tokens.dtype}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
        if temperature > 0 and key is None:
            raise ValueError("sampling (temperature > 0) needs key=jax.random.key(seed)")
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= self.config.vocab_size):
            raise ValueError(f"top_k must be an int in [1, vocab_size={self.config.vocab_size}] or None, got {top_k!r}")
        B, P = tokens.shape
        _check_tokens(tokens, self.config.vocab_size)
        total = P + max_new_tokens
        policy = CachePolicy.make(total, window=window, sink_tokens=sink_tokens, relative=relative_positions)
        self._check_positions(policy.size if relative_positions else total, f"generating {total} tokens")
        buffer = jnp.zeros((B, total), jnp.int32).at[:, :P].set(tokens.astype(jnp.int32))
        key = jax.random.key(0) if key is None else key
        graphdef, state = nnx.split(self)
        return _generate(graphdef, state, buffer, key, jnp.float32(max(temperature, 1e-6)), policy=policy,
                         num_prompt=P, greedy=temperature == 0, top_k=top_k)


def _decode_step(model: CausalLM, caches: list[KVCache], tokens: Array, t0, policy: CachePolicy):
    """Run T new tokens at text positions t0..t0+T-1 through the model with its cache.

    Returns (logits (B, T, V), caches).
    """
    slots, q_pos, k_pos, mask = policy.step(t0, tokens.shape[1])
    h = model._embed(tokens, q_pos)  # (B, T, D)
    new_caches = []
    for block, cache in zip(model.blocks, caches):
        h, cache = block(h, mask=mask[None, None], positions=q_pos, cache=cache, cache_slots=slots,
                         cache_positions=k_pos)
        new_caches.append(cache)
    return model._logits(h), new_caches


def _sample(logits: Array, key: Array, temperature: Array, greedy: bool, top_k: int | None) -> Array:
    """(B, V) logits -> (B,) int32 next tokens."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1) the k-th largest logit
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "policy", "num_prompt", "greedy", "top_k"))
def _generate(graphdef, state, buffer, key, temperature, *, policy, num_prompt, greedy, top_k):
    """buffer (B, total) holds the prompt in its first num_prompt columns; returns it filled."""
    model = nnx.merge(graphdef, state)
    B, total = buffer.shape
    first = min(num_prompt, policy.size)  # the prompt's head fits in the cache: one parallel step
    logits, caches = _decode_step(model, model.init_cache(B, policy.size), buffer[:, :first], 0, policy)

    def step(carry, t):
        caches, last_logits, buffer, key = carry
        key, sub = jax.random.split(key)
        token = jnp.where(t < num_prompt, buffer[:, t], _sample(last_logits, sub, temperature, greedy, top_k))
        buffer = buffer.at[:, t].set(token)
        logits, caches = _decode_step(model, caches, token[:, None], t, policy)  # (B, 1, V)
        return (caches, logits[:, 0], buffer, key), None

    carry = (caches, logits[:, -1], buffer, key)
    (_, _, buffer, _), _ = jax.lax.scan(step, carry, jnp.arange(first, total))
    return buffer


def _check_tokens(tokens: Array, vocab_size: int) -> None:
    """Tokens outside 0..V-1 are an error where it is free to check: on concrete (not traced) arrays."""
    if isinstance(tokens, jax.core.Tracer) or not tokens.size:
        return
    values = np.asarray(tokens)  # concrete: numpy, so that no op is traced when called inside jit
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"tokens must be ids in [0, vocab_size={vocab_size}), got values in [{low}, {high}] "
                         f"(shape {tokens.shape}); check the tokenizer / data against LMConfig.vocab_size")


# ------------------------------------------------------------------------ streaming
def streaming_forward(model: CausalLM, tokens: Array, *, window: int | None = None, sink_tokens: int = 0,
                      relative_positions: bool = True, return_attention: bool = False):
    """Logits of every token of a long sequence, each computed with the KV cache policy.

    Token t sees only the tokens in the cache at time t: the first `sink_tokens` and
    the last `window` (itself included), at cache-relative positions (StreamingLLM,
    Xiao et al. 2023). window=None is dense causal attention, equal to `model(tokens)`.

    Args:
      model: a CausalLM.
      tokens: (B, L) int.
      window, sink_tokens, relative_positions: the cache policy (see `CausalLM.generate`).
      return_attention: also return every layer's attention over the cache slots.

    Returns:
      logits (B, L, V); with return_attention, also ({layer_name: weights (B, N, L, C)}
      over the C cache slots, slot_tokens (L, C) int: the index in `tokens` of the token
      each slot holds at each step, -1 for an empty slot).
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be a (B, L) integer array with L >= 1, got shape {tokens.shape}, "
                         f"dtype {tokens.dtype}")
    L = tokens.shape[1]
    _check_tokens(tokens, model.config.vocab_size)
    policy = CachePolicy.make(L, window=window, sink_tokens=sink_tokens, relative=relative_positions)
    model._check_positions(policy.size if relative_positions else L, f"streaming {L} tokens")
    graphdef, state = nnx.split(model)
    logits, weights, slot_tokens = _streaming(graphdef, state, tokens.astype(jnp.int32), policy=policy,
                                              return_attention=return_attention)
    return (logits, weights, slot_tokens) if return_attention else logits


@functools.partial(jax.jit, static_argnames=("graphdef", "policy", "return_attention"))
def _streaming(graphdef, state, tokens, *, policy, return_attention):
    B, L = tokens.shape
    first = policy.size  # tokens 0..C-1 fill the cache without eviction: one parallel step

    def run(caches, chunk, t0):  # one decode step, recording attention if asked
        model = nnx.merge(graphdef, state)  # a copy at this trace level (inside the scan when t0 is traced)
        if not return_attention:
            return (*_decode_step(model, caches, chunk, t0, policy), {})
        (logits, caches), weights = record_attention(
            lambda m: _decode_step(m, caches, chunk, t0, policy), model)(model)
        return logits, caches, weights  # weights: {name: (B, N, T, C)}

    logits, caches, weights = run(nnx.merge(graphdef, state).init_cache(B, policy.size), tokens[:, :first], 0)

    def step(caches, t):
        logits, caches, w = run(caches, jax.lax.dynamic_slice_in_dim(tokens, t, 1, axis=1), t)
        return caches, (logits[:, 0], w)

    _, (rest, rest_w) = jax.lax.scan(step, caches, jnp.arange(first, L))  # (L - C, B, V)
    logits = jnp.concatenate([logits, jnp.swapaxes(rest, 0, 1)], axis=1)  # (B, L, V)
    weights = {name: jnp.concatenate([w, jnp.moveaxis(rest_w[name][:, :, :, 0], 0, 2)], axis=2)  # (B, N, L, C)
               for name, w in weights.items()}

    def table(t):  # which token each slot holds after token t was written
        index, valid = policy.contents(t)
        return jnp.where(valid & (index <= t), index, -1)

    return logits, weights, jax.vmap(table)(jnp.arange(L))  # (L, C)


def streaming_nll(model: CausalLM, tokens: Array, *, window: int | None = None, sink_tokens: int = 0,
                  relative_positions: bool = True) -> Array:
    """Per-token negative log-likelihood of a sequence scored under a KV-cache policy.

    The attention-sinks experiment (Xiao et al. 2023): compare dense attention,
    a sliding window, and a window plus the first tokens kept, beyond the training length.

    Args:
      model: a CausalLM.
      tokens: (B, L) int.
      window, sink_tokens, relative_positions: the cache policy (see `streaming_forward`).

    Returns:
      (B, L - 1) float32: nll[:, t] = -log p(tokens[:, t + 1] | cache at time t).
    """
    logits = streaming_forward(model, tokens, window=window, sink_tokens=sink_tokens,
                               relative_positions=relative_positions)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)  # (B, L-1, V)
    return -jnp.take_along_axis(logp, jnp.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]


__all__ = ["LMConfig", "CausalLM", "streaming_forward", "streaming_nll", "POSITIONS"]
