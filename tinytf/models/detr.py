"""DETR: detection as set prediction with a transformer (Carion et al. 2020).

Reading order:
  1. `DETRConfig` — every switch the vision lessons turn;
  2. `Backbone` — a small CNN: 64x64 RGB -> 8x8 feature map (3 stride-2 convolutions);
  3. `DecoderLayer` — self-attention among queries, cross-attention to the image, MLP;
  4. `DETR` — projection, 2-D sine positions, encoder, decoder, class and box heads.

The network is separate from the task, as in scenic: Hungarian matching and the
loss live in `tinytf.detection`, not here.

Positions (DETR's convention): the 2-D sine encoding of each cell is added to the
keys (and, in the encoder, the queries) of attention — never to the values. Each
object query is a learned positional embedding `query_embed` added to a decoder
input that starts at zero, so queries differ *only* through `query_embed`: make
those identical and every query computes the same thing (the symmetry the
detr-queries lesson shows).

Conditional spatial query (Meng et al. 2021, Conditional DETR; Liu et al. 2022,
DAB-DETR): each query owns a learnable reference point r_q in [0,1]^2. Its
cross-attention logit gets a separate spatial term
    (lambda(f_q) * PE(r_q)) . PE(cell) / sqrt(H)
besides the content term, so a query looks near its reference point from the
first step; its box centre is predicted relative to r_q.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.nn import MLP, Block, MultiHeadAttention
from tinytf.positional import sine_2d
from tinytf.variants import AttentionConfig

Array = jax.Array


@dataclass(frozen=True, kw_only=True)
class DETRConfig:
    """A small DETR. The defaults train on 64x64 shapes images on a CPU."""

    num_classes: int = 4
    """Object classes; the heads predict num_classes + 1 (the last is "no object")."""
    num_queries: int = 10
    """Object queries (slots); must be >= the most objects in an image."""
    d_model: int = 64
    num_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    mlp_ratio: float = 2.0
    image_size: int = 64
    backbone_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the stride-2 convolutions: 3 of them map 64x64 to an 8x8 map."""
    feature_dim: int | None = None
    """If set, the model takes (B, h, w, feature_dim) feature maps directly (no backbone)."""
    feature_size: int = 8
    """Side of the feature map (8 for 64x64 images)."""
    spatial_pe: Literal["sine", "none"] = "sine"
    """2-D sine positions on the keys; "none" leaves attention content-only (a lesson's failure)."""
    pe_temperature: float = 10000.0
    pe_normalize: bool = False
    """DETR's normalize option: map cell coordinates to (0, 2 pi] before the sines."""
    query_init: Literal["learned", "identical", "zero"] = "learned"
    """learned: N(0,1) query embeddings; identical: one shared vector; zero: all zeros."""
    conditional: bool = False
    """Conditional/DAB-style spatial query with a learnable reference point per query."""
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def __post_init__(self):
        if self.num_classes < 1 or self.num_queries < 1:
            raise ValueError(f"num_classes and num_queries must be >= 1, got {self.num_classes}, {self.num_queries}")
        if self.d_model % 4 or self.d_model % self.num_heads:
            raise ValueError(f"d_model must be divisible by 4 (2-D sine encoding) and by num_heads="
                             f"{self.num_heads}, got {self.d_model}")
        if self.feature_dim is None and self.image_size != self.feature_size * 2 ** len(self.backbone_channels):
            raise ValueError(
                f"image_size={self.image_size} does not map to feature_size={self.feature_size} with "
                f"{len(self.backbone_channels)} stride-2 convolutions (expected "
                f"{self.feature_size * 2 ** len(self.backbone_channels)})")
        for name, ok in (("spatial_pe", ("sine", "none")), ("query_init", ("learned", "identical", "zero"))):
            if getattr(self, name) not in ok:
                raise ValueError(f"{name} must be one of {ok}, got {getattr(self, name)!r}")

    @classmethod
    def tiny(cls, **changes) -> "DETRConfig":
        """The preset the tests and lessons train: 2+2 layers, d=64, 10 queries."""
        return cls(**changes)

    def replace(self, **changes) -> "DETRConfig":
        return dataclasses.replace(self, **changes)


class Backbone(nnx.Module):
    """Stride-2 3x3 convolutions with ReLU: (B, 64, 64, 3) -> (B, 8, 8, C)."""

    def __init__(self, channels: tuple[int, ...], *, rngs: nnx.Rngs):
        ins = (3,) + tuple(channels[:-1])
        self.convs = nnx.List([nnx.Conv(i, o, kernel_size=(3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
                               for i, o in zip(ins, channels)])

    def __call__(self, images: Array) -> Array:
        x = images
        for conv in self.convs:
            x = jax.nn.relu(conv(x))  # each halves H and W
        return x


class DecoderLayer(nnx.Module):
    """DETR's decoder layer (post-norm): queries talk to each other, then look at the image.

    self-attention:  q = k = tgt + query_pos, v = tgt
    cross-attention: q = tgt + query_pos (content and position added, DETR) or
                     q = tgt with a separate spatial logit term (conditional), k = memory + pos, v = memory
    """

    def __init__(self, cfg: DETRConfig, *, rngs: nnx.Rngs):
        D = cfg.d_model
        self.attn = MultiHeadAttention(D, cfg.num_heads, config=cfg.attention, rngs=rngs)
        self.cross_attn = MultiHeadAttention(D, cfg.num_heads, config=cfg.attention, rngs=rngs)
        self.mlp = MLP(D, int(cfg.mlp_ratio * D), activation="relu", rngs=rngs)
        self.norm1, self.norm2, self.norm3 = (nnx.LayerNorm(D, rngs=rngs) for _ in range(3))

    def __call__(self, tgt, memory, *, query_pos, memory_pos, cross_query_pos, cross_bias=None):
        tgt = self.norm1(tgt + self.attn(tgt, query_pos=query_pos, key_pos=query_pos))
        tgt = self.norm2(tgt + self.cross_attn(tgt, memory, query_pos=cross_query_pos, key_pos=memory_pos,
                                               bias=cross_bias))
        return self.norm3(tgt + self.mlp(tgt))


def _inverse_sigmoid(x: Array, eps: float = 1e-5) -> Array:
    x = jnp.clip(x, eps, 1 - eps)
    return jnp.log(x / (1 - x))


def _point_encoding(points: Array, dim: int, temperature: float) -> Array:
    """Sine code of 2-D points in [0,1]^2 -> (..., dim): half for y, half for x (DETR's 2-D scheme).

    Points are scaled to cell coordinates of an 8-cell side so that the code of a
    reference point matches `sine_2d` of the cell it sits in.
    """
    half = dim // 2
    freq = temperature ** (-jnp.arange(0, half, 2, dtype=jnp.float32) / half)  # (half/2,)

    def code(c):  # (...,) -> (..., half)
        a = c[..., None] * freq
        return jnp.stack([jnp.sin(a), jnp.cos(a)], axis=-1).reshape(c.shape + (half,))

    return jnp.concatenate([code(points[..., 1]), code(points[..., 0])], axis=-1)


class DETR(nnx.Module):
    """A small DETR. `__call__(images or features) -> {"logits", "boxes", "aux"}`.

    Returns:
      logits: (B, Q, C + 1) class scores, the last class = "no object";
      boxes: (B, Q, 4) normalised (cx, cy, w, h) in [0, 1] (sigmoid);
      aux: one {"logits", "boxes"} per earlier decoder layer (auxiliary losses).
    """

    def __init__(self, cfg: DETRConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, Q = cfg.d_model, cfg.num_queries
        self.backbone = Backbone(cfg.backbone_channels, rngs=rngs) if cfg.feature_dim is None else None
        in_dim = cfg.feature_dim or cfg.backbone_channels[-1]
        self.input_proj = nnx.Linear(in_dim, D, rngs=rngs)  # a 1x1 convolution on the feature map
        block = dict(attention=cfg.attention, mlp_ratio=cfg.mlp_ratio, norm="post", activation="relu")
        self.encoder = nnx.List([Block(D, cfg.num_heads, rngs=rngs, **block) for _ in range(cfg.encoder_layers)])
        self.decoder = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.decoder_layers)])
        if cfg.query_init == "learned":
            embed = jax.random.normal(rngs.params(), (Q, D))
        elif cfg.query_init == "identical":
            embed = jnp.broadcast_to(jax.random.normal(rngs.params(), (1, D)), (Q, D))
        else:
            embed = jnp.zeros((Q, D))
        self.query_embed = nnx.Param(embed)  # (Q, D) object queries
        if cfg.conditional:
            # reference points spread uniformly at random over the image (DAB-DETR's init)
            self.reference = nnx.Param(_inverse_sigmoid(jax.random.uniform(rngs.params(), (Q, 2), minval=0.05,
                                                                           maxval=0.95)))
            self.ref_proj = MLP(D, D, activation="relu", rngs=rngs)  # PE(ref) -> self-attention query_pos
            self.spatial_scale = nnx.List([MLP(D, D, activation="relu", rngs=rngs)
                                           for _ in range(cfg.decoder_layers)])  # lambda(f): diagonal transform
            self.spatial_query_proj = nnx.Linear(D, D, rngs=rngs)
            self.spatial_key_proj = nnx.Linear(D, D, rngs=rngs)
        self.class_head = nnx.Linear(D, cfg.num_classes + 1, rngs=rngs)
        self.box_head = MLP(D, D, activation="relu", rngs=rngs)
        self.box_out = nnx.Linear(D, 4, rngs=rngs)

    def positional_encoding(self) -> Array:
        """(h*w, D) 2-D sine encoding of the feature cells (zeros when spatial_pe="none")."""
        cfg = self.cfg
        s = cfg.feature_size
        if cfg.spatial_pe == "none":
            return jnp.zeros((s * s, cfg.d_model))
        return sine_2d(s, s, cfg.d_model, temperature=cfg.pe_temperature, normalize=cfg.pe_normalize)

    def features(self, inputs: Array) -> Array:
        """Images (B, 64, 64, 3) or feature maps (B, h, w, F) -> projected tokens (B, h*w, D)."""
        cfg = self.cfg
        if self.backbone is not None:
            if inputs.ndim != 4 or inputs.shape[1:] != (cfg.image_size, cfg.image_size, 3):
                raise ValueError(f"images must have shape (B, {cfg.image_size}, {cfg.image_size}, 3), "
                                 f"got {inputs.shape}")
            inputs = self.backbone(inputs)
        elif inputs.ndim != 4 or inputs.shape[1:] != (cfg.feature_size, cfg.feature_size, cfg.feature_dim):
            raise ValueError(f"features must have shape (B, {cfg.feature_size}, {cfg.feature_size}, "
                             f"{cfg.feature_dim}), got {inputs.shape}")
        B = inputs.shape[0]
        return self.input_proj(inputs).reshape(B, -1, cfg.d_model)  # (B, h*w, D), row-major cells

    def __call__(self, inputs: Array) -> dict:
        cfg = self.cfg
        memory = self.features(inputs)  # (B, P, D), P = h*w
        B = memory.shape[0]
        pos = self.positional_encoding()[None]  # (1, P, D)
        for layer in self.encoder:
            memory = layer(memory, query_pos=pos)  # positions on queries and keys, not values
        tgt = jnp.zeros((B, cfg.num_queries, cfg.d_model))  # decoder input starts at zero
        query_pos = jnp.broadcast_to(self.query_embed[...], tgt.shape)  # (B, Q, D)
        cross_query_pos, memory_pos, ref = query_pos, pos, None
        if cfg.conditional:
            ref = jax.nn.sigmoid(self.reference[...])  # (Q, 2) reference points (x, y) in [0, 1]
            ref_pe = _point_encoding(ref * cfg.feature_size + 0.5, cfg.d_model, cfg.pe_temperature)  # (Q, D)
            query_pos = jnp.broadcast_to(self.ref_proj(ref_pe), tgt.shape)
            cross_query_pos, memory_pos = None, None  # content-only; the spatial term is a separate bias
            spatial_keys = self._split(self.spatial_key_proj(pos))  # (1, P, N, H)
        outputs = []
        for i, layer in enumerate(self.decoder):
            bias = None
            if cfg.conditional:
                spatial_q = self._split(self.spatial_query_proj(self.spatial_scale[i](tgt) * ref_pe))  # (B, Q, N, H)
                bias = jnp.einsum("bqnh,bpnh->bnqp", spatial_q, jnp.broadcast_to(
                    spatial_keys, (B,) + spatial_keys.shape[1:])) / math.sqrt(spatial_q.shape[-1])  # (B, N, Q, P)
            tgt = layer(tgt, memory, query_pos=query_pos, memory_pos=memory_pos, cross_query_pos=cross_query_pos,
                        cross_bias=bias)
            outputs.append(self._heads(tgt, ref))
        return {**outputs[-1], "aux": outputs[:-1]}

    def _split(self, x: Array) -> Array:
        N = self.cfg.num_heads
        return x.reshape(x.shape[:-1] + (N, x.shape[-1] // N))  # (..., D) -> (..., N, H)

    def _heads(self, h: Array, ref: Array | None) -> dict:
        delta = self.box_out(jax.nn.relu(self.box_head(h)))  # (B, Q, 4)
        if ref is not None:  # the box centre is predicted relative to the reference point
            delta = delta.at[..., :2].add(_inverse_sigmoid(ref))
        return {"logits": self.class_head(h), "boxes": jax.nn.sigmoid(delta)}

    def cross_attention_maps(self, inputs: Array, layer: int = -1) -> Array:
        """Each query's cross-attention over the feature grid: (B, N, Q, h, w) for one decoder layer."""
        from tinytf.nn import capture_attention

        maps = capture_attention(self, inputs)
        names = [n for n in maps if n.endswith("cross_attn")]
        w = maps[names[layer]]  # (B, N, Q, P)
        s = self.cfg.feature_size
        return w.reshape(w.shape[:3] + (s, s))
