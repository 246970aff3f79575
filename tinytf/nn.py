"""Flax NNX layers: attention, MLP, the transformer block, encoder and decoder stacks.

Reading order: `Linear` (with optional sigma-Reparam) -> `MultiHeadAttention` ->
`MLP` -> `Block` -> `LearnedPositions` -> `Encoder` / `Decoder`.

The maths lives in `tinytf.attention`; these layers only own parameters and
reshape between the model width D and heads (N, H). One forward path serves
training, prefill and decoding: pass `cache=` (a `tinytf.cache.KVCache`) to decode.
Every attention layer can record its weights (B, N, T, S) for
`tinytf.capture.capture_attention` without any change to model code; when nobody
records, that costs one Python `if` at trace time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf import attention as attn_lib
from tinytf.cache import KVCache
from tinytf.capture import sow_attention
from tinytf.checks import check_int, check_number
from tinytf.positional import alibi_bias, apply_rope
from tinytf.variants import AttentionConfig

Array = jax.Array


class HeadGate(nnx.Variable):
    """Per-head multiplier xi_h on a head's output (ones = unchanged).

    Not a Param: optimisers leave it alone. Michel et al. (2019) define head
    importance as E|dL/d xi_h| at xi = 1; pruning a head = setting xi_h = 0.
    """


# ------------------------------------------------------------------------- Linear
def _spectral_norm(w: Array, iters: int = 8) -> Array:
    """Largest singular value of a 2-D w by power iteration; u, v carry no gradient.

    sigma = u^T W v with stop-gradient u, v (Miyato et al. 2018), so d sigma/dW = u v^T.
    Stateless: starts from a fixed vector each call (8 iterations suffice for the
    small matrices here and keep training functional).
    """
    v = jnp.ones((w.shape[1],), w.dtype) / math.sqrt(w.shape[1])
    wd = jax.lax.stop_gradient(w)

    def body(_, v):
        u = wd @ v
        u = u / (jnp.linalg.norm(u) + 1e-12)
        v = wd.T @ u
        return v / (jnp.linalg.norm(v) + 1e-12)

    v = jax.lax.fori_loop(0, iters, body, v)
    u = wd @ v
    u = jax.lax.stop_gradient(u / (jnp.linalg.norm(u) + 1e-12))
    return u @ w @ jax.lax.stop_gradient(v)


class Linear(nnx.Module):
    """y = x W + b, optionally sigma-Reparametrised (Zhai et al. 2023): W -> gamma W / sigma(W).

    gamma is a learned scalar initialised to sigma(W_0), so training starts exactly
    where the plain layer would; afterwards the layer's spectral norm is gamma, a
    single scalar the optimiser must grow on purpose.
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 sigma_reparam: bool = False, rngs: nnx.Rngs):
        check_int("in_features", in_features, low=1)
        check_int("out_features", out_features, low=1)
        self.in_features, self.out_features = in_features, out_features
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.sigma_reparam = sigma_reparam
        if sigma_reparam:
            self.gamma = nnx.Param(_spectral_norm(self.kernel[...]))

    def __call__(self, x: Array) -> Array:
        w = self.kernel[...]
        if self.sigma_reparam:
            w = w * (self.gamma[...] / _spectral_norm(w))
        y = x @ w.astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


# ------------------------------------------------------------- MultiHeadAttention
class MultiHeadAttention(nnx.Module):
    """Multi-head attention (Vaswani et al. 2017), self- or cross-, configured by an AttentionConfig.

    x (B, T, D) -> queries; context (B, S, Dk) (default x) -> keys and values;
    heads are N slices of width H = D / N; out (B, T, D). With config.num_kv_heads = K
    (K | N) keys and values have K heads shared by groups of N / K query heads
    (grouped-query attention, Ainslie et al. 2023; K = 1 is multi-query, Shazeer 2019):
    the KV cache shrinks by N / K. With config.dropout_rate > 0 the weights are dropped
    in training; `model.eval()` (deterministic=True) turns it off, as for nnx.Dropout.

    One forward path serves training, prefill and decoding: with `cache=` the new
    tokens' keys and values are written into a `tinytf.cache.KVCache` first and the
    queries attend over every cache slot (the Flax NNX Gemma example's pattern).
    While `tinytf.capture` records, the layer sows its weights (B, N, T, S).
    """

    def __init__(self, d_model: int, num_heads: int, *, config: AttentionConfig | None = None,
                 kv_dim: int | None = None, head_dim: int | None = None, rngs: nnx.Rngs):
        config = config or AttentionConfig()
        check_int("d_model", d_model, low=1)
        check_int("num_heads", num_heads, low=1)
        if head_dim is None and d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        N, H = num_heads, head_dim or d_model // num_heads
        K = config.num_kv_heads or N
        if N % K:
            raise ValueError(f"num_kv_heads={K} must divide num_heads={N} (grouped-query attention)")
        if config.position == "rope" and H % 2:
            raise ValueError(f"RoPE needs an even head dim, got head_dim={H}")
        self.config, self.num_heads, self.num_kv_heads, self.head_dim = config, N, K, H
        lin = dict(use_bias=config.use_bias, sigma_reparam=config.sigma_reparam, rngs=rngs)
        self.query_proj = Linear(d_model, N * H, **lin)
        self.key_proj = Linear(kv_dim or d_model, K * H, **lin)
        self.value_proj = Linear(kv_dim or d_model, K * H, **lin)
        self.out_proj = Linear(N * H, d_model, **lin)
        if config.qk_norm:
            self.query_norm = nnx.LayerNorm(H, rngs=rngs)
            self.key_norm = nnx.LayerNorm(H, rngs=rngs)
        if config.gate:  # gate bias 0: sigma = 0.5 at init
            self.gate_proj = Linear(d_model, N * H, rngs=rngs)
        if config.sink:  # one extra logit per head, for a key whose value is zero
            self.sink_logit = nnx.Param(jnp.zeros((N,), jnp.float32))
        if config.normalizer == "ssmax":  # Nakanishi's learnable s, one per head
            self.ssmax_scale = nnx.Param(jnp.full((N,), config.ssmax_init, jnp.float32))
        self.head_gate = HeadGate(jnp.ones((N,), jnp.float32))
        if config.dropout_rate:  # nnx.Dropout's convention: a forked RNG stream, train mode at start
            self.dropout_rngs = rngs["dropout"].fork()
            self.deterministic = False
        self.record_attention = None  # a tinytf.capture.Recording while capture_attention runs

    def _heads(self, x: Array, heads: int | None = None) -> Array:
        B, L, _ = x.shape
        return x.reshape(B, L, heads or self.num_heads, self.head_dim)  # (B, L, N or K, H)

    def __call__(self, x: Array, context: Array | None = None, *, mask: Array | None = None,
                 bias: Array | None = None, is_causal: bool = False, positions: Array | None = None,
                 context_positions: Array | None = None, query_pos: Array | None = None,
                 key_pos: Array | None = None, cache: KVCache | None = None,
                 cache_slots: Array | None = None, causal_alignment: str = "bottom_right",
                 query_lengths: Array | None = None, key_lengths: Array | None = None
                 ) -> Array | tuple[Array, KVCache]:
        """Attend from x to context (or, with a cache, to every cache slot).

        Args:
          x: (B, T, D) queries' input.
          context: (B, S, Dk) keys'/values' input; default x (self-attention).
          mask: bool, broadcastable to (B, N, T, S); True = may attend. With a cache:
            (B|1, N|1, T, C) over the C slots, after the write.
          bias: float, broadcastable to (B, N, T, S), added to the logits.
          is_causal: causal masking; causal_alignment says where the queries sit among
            the keys when T != S ("bottom_right", the default, or "top_left"; see
            `tinytf.attention.masks`).
          positions / context_positions: (T,) or (B, T) positions for RoPE / ALiBi
            (default: the last T of 0..S-1, and 0..S-1); with a cache, the new tokens'
            positions and the positions of all C slots' tokens.
          query_pos / key_pos: added to the query / key inputs only, not to the values
            (DETR's positional encodings, Carion et al. 2020).
          cache: a KVCache (self-attention only): x's keys and values (stored before
            RoPE) are written into `cache_slots` (T,) and the queries attend over all
            C slots; the layer's sliding window is applied by position.
          query_lengths, key_lengths: optional (B,) int per-example lengths (padding).

        Returns:
          (B, T, D), or ((B, T, D), the updated KVCache) when a cache is given.
        """
        cfg = self.config
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, T, D), got {x.shape}")
        if cache is not None and (context is not None or cache_slots is None or context_positions is None):
            raise ValueError("with cache=, pass cache_slots (T,) and context_positions (C,) and no context: "
                             "the cache is for self-attention")
        context = x if context is None else context
        if context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(f"context must have shape (B={x.shape[0]}, S, D), got {context.shape}")
        q, k, v = self._project(x, context, query_pos, key_pos)  # (B, T, N, H), (B, S, N, H) x2
        window = cfg.window
        if cache is not None:  # write the new keys/values, then attend over every slot
            cache = cache.write(cache_slots, k, v)
            k, v = cache.keys.astype(q.dtype), cache.values.astype(q.dtype)  # (B, C, K, H)
            if window is not None:  # the window by position: slots hold tokens out of order
                left, right, causal = attn_lib.window_bounds(window)
                distance = positions[:, None] - context_positions[None, :]  # (T, C)
                mask = mask & (distance <= left) if causal else mask & (distance <= left) & (distance >= -right)
                window = None
        T, S = q.shape[1], k.shape[1]
        if cfg.position != "none":
            positions = jnp.arange(S - T, S) if positions is None else positions
            context_positions = (positions if context is x else jnp.arange(S)) if context_positions is None \
                else context_positions
            if cfg.position == "rope":
                rope = dict(base=cfg.rope_base, style=cfg.rope_style, fraction=cfg.rope_fraction,
                            scale=cfg.rope_scale)
                q = apply_rope(q, positions, **rope)
                k = apply_rope(k, context_positions, **rope)
            else:
                alibi = alibi_bias(self.num_heads, positions, context_positions)  # (1|B, N, T, S)
                bias = alibi if bias is None else bias + alibi
        out, _ = self.attend(q, k, v, mask=mask, bias=bias, is_causal=is_causal, window=window,
                             causal_alignment=causal_alignment, query_lengths=query_lengths, key_lengths=key_lengths)
        out = self._output(out, x)
        return out if cache is None else (out, cache)

    def _project(self, x: Array, context: Array, query_pos: Array | None = None,
                 key_pos: Array | None = None) -> tuple[Array, Array, Array]:
        """Queries (B, T, N, H) from x; keys and values (B, S, K, H) from context; QK-norm if set."""
        q = self._heads(self.query_proj(x if query_pos is None else x + query_pos))  # (B, T, N, H)
        k = self._heads(self.key_proj(context if key_pos is None else context + key_pos), self.num_kv_heads)
        v = self._heads(self.value_proj(context), self.num_kv_heads)  # (B, S, K, H)
        if self.config.qk_norm:
            q, k = self.query_norm(q), self.key_norm(k)
        return q, k, v

    def _output(self, out: Array, x: Array) -> Array:
        """Head gates, the optional sigmoid output gate, and the output projection: (B, T, N, H) -> (B, T, D)."""
        B, T = out.shape[:2]
        out = out * self.head_gate[...][:, None].astype(out.dtype)  # (B, T, N, H) * (N, 1)
        if self.config.gate:
            out = out * jax.nn.sigmoid(self._heads(self.gate_proj(x)))
        return self.out_proj(out.reshape(B, T, self.num_heads * self.head_dim))

    def init_cache(self, batch_size: int, size: int, dtype=jnp.float32) -> KVCache:
        """An empty KV cache of `size` slots for this layer."""
        return KVCache.zeros(batch_size, size, self.num_kv_heads, self.head_dim, dtype)

    def attend(self, q: Array, k: Array, v: Array, *, mask: Array | None = None, bias: Array | None = None,
               is_causal: bool = False, window=None, causal_alignment: str = "bottom_right",
               query_lengths: Array | None = None, key_lengths: Array | None = None) -> tuple[Array, Array | None]:
        """The attention maths on (B, T, N, H) queries and (B, S, K, H) keys/values, as the config
        says; sows the maps while recording."""
        cfg = self.config
        recording = self.record_attention is not None
        T, S = q.shape[1], k.shape[1]
        dropout = cfg.dropout_rate if cfg.dropout_rate and not self.deterministic else 0.0
        if cfg.normalizer == "ssmax":  # logits * s_h * log n == (q * s_h) . k * log n
            q = q * self.ssmax_scale[...][:, None].astype(q.dtype)
        if cfg.fn is not None:  # a researcher's function sees one mask and N key/value heads
            offset = attn_lib.query_offset(T, S, causal_alignment)
            full_mask = attn_lib.combine_masks(
                mask, attn_lib.structured_mask(T, offset, 0, S, is_causal, window),
                attn_lib.length_mask(query_lengths, key_lengths, T, S))
            if self.num_kv_heads != self.num_heads:  # (B, S, K, H) -> (B, S, N, H)
                k, v = (jnp.repeat(x, self.num_heads // self.num_kv_heads, axis=2) for x in (k, v))
            out, weights = cfg.fn(q, k, v, full_mask, bias)
        else:
            chunk = cfg.chunk_size  # "auto": flash for long inputs (dot_product_attention decides)
            if recording or cfg.normalizer not in attn_lib.ONLINE_NORMALIZERS:
                chunk = None  # maps are wanted, or the normalizer has no online form
            out, weights = attn_lib.dot_product_attention(
                q, k, v, mask, bias=bias, normalizer=cfg.normalizer,
                sink=self.sink_logit[...] if cfg.sink else None, is_causal=is_causal,
                causal_alignment=causal_alignment, window=window, query_lengths=query_lengths,
                key_lengths=key_lengths, logit_cap=cfg.logit_cap, dropout_rate=dropout,
                dropout_key=self.dropout_rngs() if dropout else None, chunk_size=chunk)
        if recording:
            logits = None
            if self.record_attention.logits:  # (B, N, T, S), before bias and mask
                logits = attn_lib.grouped_logits(q.astype(jnp.float32), k.astype(jnp.float32))
                logits = logits / math.sqrt(self.head_dim)
            sow_attention(self, weights, logits)
        return out, weights


# ------------------------------------------------------------------------------ MLP
_ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "silu": jax.nn.silu, "tanh": jnp.tanh}


class MLP(nnx.Module):
    """Position-wise feed-forward network: D -> hidden -> D with a nonlinearity."""

    def __init__(self, d_model: int, hidden: int, *, activation: str = "gelu", sigma_reparam: bool = False,
                 rngs: nnx.Rngs):
        check_int("hidden", hidden, low=1)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.fc1 = Linear(d_model, hidden, sigma_reparam=sigma_reparam, rngs=rngs)
        self.fc2 = Linear(hidden, d_model, sigma_reparam=sigma_reparam, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(_ACTIVATIONS[self.activation](self.fc1(x)))


# ---------------------------------------------------------------------------- Block
class Block(nnx.Module):
    """A transformer block: self-attention, optional cross-attention, MLP.

    Switches (the rank-collapse lesson needs attention-only stacks):
      norm: "pre"  -> x = x + attn(norm(x))        (GPT-2, ViT; the default)
            "post" -> x = norm(x + attn(x))        (original Transformer, DETR)
            "none" -> no LayerNorm
      residual: False drops the skip connections (x = attn(...)).
      use_mlp: False drops the feed-forward sub-layer.
    """

    def __init__(self, d_model: int, num_heads: int, *, attention: AttentionConfig | None = None,
                 mlp_ratio: float = 4.0, norm: str = "pre", residual: bool = True, use_mlp: bool = True,
                 cross_attention: bool = False, kv_dim: int | None = None, activation: str = "gelu",
                 rngs: nnx.Rngs):
        check_number("mlp_ratio", mlp_ratio, low=0, low_open=True)
        if norm not in ("pre", "post", "none"):
            raise ValueError(f"norm must be 'pre', 'post' or 'none', got {norm!r}")
        attention = attention or AttentionConfig()
        self.norm_mode, self.residual, self.use_mlp = norm, residual, use_mlp
        self.attn = MultiHeadAttention(d_model, num_heads, config=attention, rngs=rngs)
        self.cross_attn = (MultiHeadAttention(d_model, num_heads, config=attention.replace(position="none"),
                                              kv_dim=kv_dim, rngs=rngs) if cross_attention else None)
        self.mlp = (MLP(d_model, int(mlp_ratio * d_model), activation=activation,
                        sigma_reparam=attention.sigma_reparam, rngs=rngs) if use_mlp else None)
        n_norms = 1 + bool(cross_attention) + bool(use_mlp)
        self.norms = nnx.List([nnx.LayerNorm(d_model, rngs=rngs) for _ in range(n_norms)] if norm != "none" else [])

    def _sublayer(self, i: int, x: Array, f) -> Array:
        """Apply sub-layer f with the block's norm placement and residual switch."""
        norm = self.norms[i] if self.norm_mode != "none" else (lambda h: h)
        if self.norm_mode == "pre":
            y = f(norm(x))
            return x + y if self.residual else y
        y = f(x)
        y = x + y if self.residual else y
        return norm(y) if self.norm_mode == "post" else y

    def __call__(self, x: Array, *, mask: Array | None = None, is_causal: bool = False,
                 positions: Array | None = None, context: Array | None = None, context_mask: Array | None = None,
                 query_pos: Array | None = None, context_pos: Array | None = None, bias: Array | None = None,
                 cross_bias: Array | None = None, cache: KVCache | None = None, cache_slots: Array | None = None,
                 cache_positions: Array | None = None) -> Array | tuple[Array, KVCache]:
        """x (B, T, D) -> (B, T, D). query_pos is added to queries and keys of the
        self-attention and to queries of the cross-attention; context_pos to the
        cross-attention keys (DETR). With `cache=` (and `cache_slots`, `cache_positions`,
        see `MultiHeadAttention`), the self-attention decodes with a KV cache and the
        block returns (x, the updated cache)."""
        new_cache = []

        def self_attention(h):
            y = self.attn(h, mask=mask, bias=bias, is_causal=is_causal, positions=positions, query_pos=query_pos,
                          key_pos=query_pos, cache=cache, cache_slots=cache_slots, context_positions=cache_positions)
            if cache is not None:
                y, c = y
                new_cache.append(c)
            return y

        x = self._sublayer(0, x, self_attention)
        i = 1
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass context=(B, S, D)")
            x = self._sublayer(i, x, lambda h: self.cross_attn(
                h, context, mask=context_mask, bias=cross_bias, query_pos=query_pos, key_pos=context_pos))
            i += 1
        if self.mlp is not None:
            x = self._sublayer(i, x, self.mlp)
        return x if cache is None else (x, new_cache[0])


class LearnedPositions(nnx.Module):
    """A learned table of position embeddings (GPT-2, BERT, ViT), init N(0, 0.02^2)."""

    def __init__(self, max_len: int, d_model: int, *, rngs: nnx.Rngs):
        check_int("max_len", max_len, low=1)
        check_int("d_model", d_model, low=1)
        self.embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, d_model)))

    def __call__(self, positions: Array) -> Array:
        """positions (T,) or (B, T) int -> (T, D) or (B, T, D)."""
        max_len = self.embedding.shape[0]
        if isinstance(positions, int):
            positions = jnp.arange(positions)
        if positions.shape[-1] > max_len:
            raise ValueError(f"sequence of length {positions.shape[-1]} exceeds max_len={max_len} "
                             "of the learned position table")
        return jnp.take(self.embedding[...], positions, axis=0)


class Encoder(nnx.Module):
    """A stack of self-attention Blocks with an optional final LayerNorm (pre-norm stacks need it)."""

    def __init__(self, num_layers: int, d_model: int, num_heads: int, *, final_norm: bool = True,
                 rngs: nnx.Rngs, **block_kwargs):
        self.layers = nnx.List([Block(d_model, num_heads, rngs=rngs, **block_kwargs) for _ in range(num_layers)])
        self.norm = nnx.LayerNorm(d_model, rngs=rngs) if final_norm else None

    def __call__(self, x: Array, **kwargs) -> Array:
        for layer in self.layers:
            x = layer(x, **kwargs)
        return self.norm(x) if self.norm is not None else x


class Decoder(nnx.Module):
    """A stack of Blocks with cross-attention to a memory; returns every layer's output.

    Returning all layers' (normed) outputs is what DETR's auxiliary losses need.
    """

    def __init__(self, num_layers: int, d_model: int, num_heads: int, *, final_norm: bool = True,
                 rngs: nnx.Rngs, **block_kwargs):
        self.layers = nnx.List([Block(d_model, num_heads, cross_attention=True, rngs=rngs, **block_kwargs)
                                for _ in range(num_layers)])
        self.norm = nnx.LayerNorm(d_model, rngs=rngs) if final_norm else None

    def __call__(self, x: Array, context: Array, **kwargs) -> list[Array]:
        outputs = []
        for layer in self.layers:
            x = layer(x, context=context, **kwargs)
            outputs.append(self.norm(x) if self.norm is not None else x)
        return outputs


__all__ = ["HeadGate", "Linear", "MultiHeadAttention", "MLP", "Block", "LearnedPositions", "Encoder", "Decoder"]
