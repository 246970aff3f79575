"""DETR: detection as set prediction with a transformer (Carion et al. 2020).

Reading order:
  1. `DETRConfig` — every switch the vision lessons turn;
  2. `StridedConv`, `Backbone` — a small CNN: 64x64 RGB -> 8x8 feature map (3 stride-2 convolutions);
  3. `DecoderLayer` — self-attention among queries, cross-attention to the image, MLP;
  4. `DETR` — projection, 2-D sine positions, encoder, decoder, class and box heads.

The network is separate from the task, as in scenic: Hungarian matching and the
loss live in `tinytf.detection`, training in `tinytf.apps.detr_recipe`.

Positions (DETR's convention): the 2-D sine encoding of each cell is added to the
keys (and, in the encoder, the queries) of attention — never to the values. Each
object query is a learned positional embedding `query_embed` added to a decoder
input that starts at zero, so queries differ *only* through `query_embed`: make
those identical and every query computes the same thing (the symmetry the
detr-queries lesson shows).

Conditional spatial query (Meng et al. 2021, Conditional DETR; Liu et al. 2022,
DAB-DETR): each query owns a learnable reference point r_q in [0,1]^2. Its
cross-attention logit gets a separate spatial term
    (lambda(f_q) * PE(r_q)) W_q . (PE(cell) W_k) / sqrt(H)
besides the content term (the concatenation of content and spatial parts), so a
query looks near its reference point from the first step; its box centre is
predicted relative to r_q. lambda = 1 in the first layer (as Conditional DETR)
and an MLP of the decoder embedding after; W_q, W_k start as the identity, so the
spatial logit starts as the sine codes' own similarity, which peaks at r_q. With
`refine=True` each layer's predicted centre becomes the next layer's reference
point (DAB-DETR's layer-by-layer anchor update, Deformable DETR's box refinement).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.capture import capture_attention
from tinytf.nn import MLP, Block, Linear, MultiHeadAttention
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
    refine: bool = False
    """With conditional: each decoder layer's predicted centre is the next layer's reference point."""
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def __post_init__(self):
        for name in ("num_classes", "num_queries", "d_model", "num_heads", "encoder_layers", "decoder_layers",
                     "image_size", "feature_size"):
            value = getattr(self, name)
            low = 0 if name == "encoder_layers" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
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
        if self.refine and not self.conditional:
            raise ValueError("refine=True moves the reference points of conditional=True: set conditional=True")

    @classmethod
    def tiny(cls, **changes) -> "DETRConfig":
        """The small model the tests and lessons train: 2+2 layers, d=64, 10 queries (plain DETR)."""
        return cls(**changes)

    @classmethod
    def fast(cls, **changes) -> "DETRConfig":
        """`tiny` with conditional spatial queries and reference-point refinement: what
        `tinytf detr train` trains (it converges several times faster than plain DETR)."""
        return cls(**{"conditional": True, "refine": True, **changes})

    def replace(self, **changes) -> "DETRConfig":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------------ backbone


class StridedConv(nnx.Module):
    """A 3x3 convolution with stride 2 and "SAME" padding, written as patches @ kernel.

    (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), O). The nine shifted, strided views of the
    padded input are stacked on the channel axis and multiplied by the kernel reshaped to
    (9C, O). Same numbers as `jax.lax.conv_general_dilated`; the reason for the detour is
    speed: XLA's CPU backend runs convolutions inside a compiled loop (`fit` trains in a
    `lax.while_loop`) about 20x slower than outside, while a matrix product stays fast.
    """

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, in_channels, out_channels), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        B, H, W, C = x.shape
        Ho, Wo = -(-H // 2), -(-W // 2)
        pad_h, pad_w = max(2 * (Ho - 1) + 3 - H, 0), max(2 * (Wo - 1) + 3 - W, 0)  # SAME: extra on the far side
        x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        patches = jnp.concatenate([x[:, dy:dy + 2 * Ho - 1:2, dx:dx + 2 * Wo - 1:2, :]
                                   for dy in range(3) for dx in range(3)], axis=-1)  # (B, Ho, Wo, 9C)
        kernel = self.kernel[...].reshape(9 * C, -1)  # (3, 3, C, O) -> (9C, O), rows in (dy, dx, c) order
        return patches @ kernel.astype(x.dtype) + self.bias[...].astype(x.dtype)  # (B, Ho, Wo, O)


class Backbone(nnx.Module):
    """Stride-2 3x3 convolutions with ReLU: (B, 64, 64, 3) -> (B, 8, 8, C)."""

    def __init__(self, channels: tuple[int, ...], *, rngs: nnx.Rngs):
        ins = (3,) + tuple(channels[:-1])
        self.convs = nnx.List([StridedConv(i, o, rngs=rngs) for i, o in zip(ins, channels)])

    def __call__(self, images: Array) -> Array:
        x = images
        for conv in self.convs:
            x = jax.nn.relu(conv(x))  # each halves H and W
        return x


# ------------------------------------------------------------------------------------- decoder


class DecoderLayer(nnx.Module):
    """DETR's decoder layer (post-norm): queries talk to each other, then look at the image.

    self-attention:  q = k = tgt + query_pos, v = tgt
    cross-attention: q = tgt + query_pos, k = memory + pos, v = memory (DETR), or
                     q = tgt, k = memory plus a separate spatial logit term (conditional)
    """

    def __init__(self, cfg: DETRConfig, *, rngs: nnx.Rngs):
        D = cfg.d_model
        self.attn = MultiHeadAttention(D, cfg.num_heads, config=cfg.attention, rngs=rngs)
        self.cross_attn = MultiHeadAttention(D, cfg.num_heads, config=cfg.attention, rngs=rngs)
        self.mlp = MLP(D, int(cfg.mlp_ratio * D), activation="relu", rngs=rngs)
        self.norm1, self.norm2, self.norm3 = (nnx.LayerNorm(D, rngs=rngs) for _ in range(3))
        if cfg.conditional:  # the spatial halves of the cross-attention query and key, identity at init
            self.spatial_query_proj = Linear(D, D, rngs=rngs)
            self.spatial_key_proj = Linear(D, D, rngs=rngs)
            for proj in (self.spatial_query_proj, self.spatial_key_proj):
                proj.kernel[...] = jnp.eye(D)

    def spatial_logits(self, spatial_query: Array, pos: Array, num_heads: int) -> Array:
        """Conditional DETR's spatial term: (B, Q, D) queries . (1, P, D) cell codes -> (B, N, Q, P)."""
        q = self.spatial_query_proj(spatial_query)  # (B, Q, D)
        k = self.spatial_key_proj(pos)  # (1, P, D)
        q = q.reshape(q.shape[:2] + (num_heads, -1))  # (B, Q, N, H)
        k = k.reshape(k.shape[:2] + (num_heads, -1))  # (1, P, N, H)
        return jnp.einsum("bqnh,xpnh->bnqp", q, k) / math.sqrt(q.shape[-1])  # (B, N, Q, P)

    def __call__(self, tgt, memory, *, query_pos, memory_pos, cross_query_pos, cross_bias=None):
        tgt = self.norm1(tgt + self.attn(tgt, query_pos=query_pos, key_pos=query_pos))
        tgt = self.norm2(tgt + self.cross_attn(tgt, memory, query_pos=cross_query_pos, key_pos=memory_pos,
                                               bias=cross_bias))
        return self.norm3(tgt + self.mlp(tgt))


def _inverse_sigmoid(x: Array, eps: float = 1e-5) -> Array:
    x = jnp.clip(x, eps, 1 - eps)
    return jnp.log(x / (1 - x))


def point_encoding(points: Array, dim: int, size: int, temperature: float = 10000.0,
                   normalize: bool = False) -> Array:
    """2-D sine code of points in [0,1]^2, on the same scale as `sine_2d` of a size x size grid.

    A point at the centre of cell (row i, column j) gets exactly row i * size + j of
    `sine_2d(size, size, dim)`: the code of a reference point and the codes of the cells
    can be compared directly.

    Args:
      points: (..., 2) as (x, y) fractions of the image.
      dim: code width (divisible by 4); half for y, half for x, as DETR.
      size: grid side of the feature map.
      temperature, normalize: as `sine_2d`.

    Returns:
      (..., dim) float32.
    """
    coords = points * size + 0.5  # cell centres land on sine_2d's 1-based coordinates
    if normalize:
        coords = coords / size * 2 * math.pi
    half = dim // 2
    freq = temperature ** (-jnp.arange(0, half, 2, dtype=jnp.float32) / half)  # (half/2,)

    def code(c):  # (...,) -> (..., half) interleaved sin/cos
        a = c[..., None] * freq
        return jnp.stack([jnp.sin(a), jnp.cos(a)], axis=-1).reshape(c.shape + (half,))

    return jnp.concatenate([code(coords[..., 1]), code(coords[..., 0])], axis=-1)


# ---------------------------------------------------------------------------------------- DETR


class PositionCode(nnx.Variable):
    """A fixed positional code stored with the model: not a Param, so optimisers leave it alone.

    Kept as state rather than a constant so that models differing only in their code (no
    positions, another temperature) compile to the same program.
    """


class DETR(nnx.Module):
    """A small DETR. `__call__(images or features) -> {"logits", "boxes", "aux"}`.

    Returns:
      logits: (B, Q, C + 1) class scores, the last class = "no object";
      boxes: (B, Q, 4) normalised (cx, cy, w, h) in [0, 1] (sigmoid);
      aux: one {"logits", "boxes"} per earlier decoder layer (auxiliary losses).
    """

    def __init__(self, cfg: DETRConfig, *, rngs: nnx.Rngs):
        if not isinstance(cfg, DETRConfig):
            raise TypeError(f"cfg must be a DETRConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        D, Q = cfg.d_model, cfg.num_queries
        self.backbone = Backbone(cfg.backbone_channels, rngs=rngs) if cfg.feature_dim is None else None
        in_dim = cfg.feature_dim or cfg.backbone_channels[-1]
        self.input_proj = Linear(in_dim, D, rngs=rngs)  # a 1x1 convolution on the feature map
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
            # reference points (x, y) spread uniformly at random over the image (DAB-DETR's init);
            # query_init "identical"/"zero" puts them all at one point, keeping the symmetry
            if cfg.query_init == "learned":
                ref = jax.random.uniform(rngs.params(), (Q, 2), minval=0.05, maxval=0.95)
            else:
                ref = jnp.full((Q, 2), 0.5)
            self.reference = nnx.Param(_inverse_sigmoid(ref))  # (Q, 2) logits of the points
            self.ref_proj = MLP(D, D, activation="relu", rngs=rngs)  # PE(ref) -> self-attention query_pos
            # lambda(f): the diagonal transform of the spatial query, from layer 2 on (layer 1 uses 1)
            self.spatial_scale = nnx.List([MLP(D, D, activation="relu", rngs=rngs)
                                           for _ in range(cfg.decoder_layers - 1)])
        s = cfg.feature_size
        code = (jnp.zeros((s * s, D)) if cfg.spatial_pe == "none" else
                sine_2d(s, s, D, temperature=cfg.pe_temperature, normalize=cfg.pe_normalize))
        self.pos_embed = PositionCode(code)  # (h*w, D) 2-D sine code of the cells
        self.class_head = Linear(D, cfg.num_classes + 1, rngs=rngs)
        self.box_head = MLP(D, D, activation="relu", rngs=rngs)
        self.box_out = Linear(D, 4, rngs=rngs)

    def positional_encoding(self) -> Array:
        """(h*w, D) 2-D sine encoding of the feature cells (zeros when spatial_pe="none")."""
        return self.pos_embed[...]

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
        ref = None
        if cfg.conditional:
            ref = jnp.broadcast_to(jax.nn.sigmoid(self.reference[...]), (B, cfg.num_queries, 2))  # (B, Q, 2)
        outputs = []
        for i, layer in enumerate(self.decoder):
            if cfg.conditional:
                ref_pe = point_encoding(ref, cfg.d_model, cfg.feature_size, cfg.pe_temperature,
                                        cfg.pe_normalize)  # (B, Q, D)
                scale = 1.0 if i == 0 else self.spatial_scale[i - 1](tgt)  # (B, Q, D) lambda(f)
                bias = layer.spatial_logits(scale * ref_pe, pos, cfg.num_heads)  # (B, N, Q, P)
                # self-attention positions from the reference point; content-only cross-attention + spatial term
                tgt = layer(tgt, memory, query_pos=query_pos + self.ref_proj(ref_pe), memory_pos=None,
                            cross_query_pos=None, cross_bias=bias)
            else:
                tgt = layer(tgt, memory, query_pos=query_pos, memory_pos=pos, cross_query_pos=query_pos)
            outputs.append(self._heads(tgt, ref))
            if cfg.refine:  # the next layer looks around this layer's predicted centre
                ref = jax.lax.stop_gradient(outputs[-1]["boxes"][..., :2])
        return {**outputs[-1], "aux": outputs[:-1]}

    def _heads(self, h: Array, ref: Array | None) -> dict:
        delta = self.box_out(jax.nn.relu(self.box_head(h)))  # (B, Q, 4)
        if ref is not None:  # the box centre is predicted relative to the reference point
            delta = delta.at[..., :2].add(_inverse_sigmoid(ref))
        return {"logits": self.class_head(h), "boxes": jax.nn.sigmoid(delta)}

    def cross_attention_maps(self, inputs: Array, layer: int = -1) -> Array:
        """Each query's cross-attention over the feature grid for one decoder layer.

        Args:
          inputs: images (B, 64, 64, 3) or feature maps, as `__call__`.
          layer: decoder layer index (default the last).

        Returns:
          (B, N, Q, h, w) attention weights (each (h, w) map sums to 1 over the cells).
        """
        L = self.cfg.decoder_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not -L <= layer < L:
            raise ValueError(f"layer must be an int in [{-L}, {L}) for {L} decoder layers, got {layer!r}")
        maps = capture_attention(self, inputs)
        w = maps[f"decoder.{layer % L}.cross_attn"]  # (B, N, Q, P)
        s = self.cfg.feature_size
        return w.reshape(w.shape[:3] + (s, s))  # (B, N, Q, h, w), row-major cells
