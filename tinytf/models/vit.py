"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), with registers.

Reading order: `PatchEmbed` (patch extraction then embedding is a single strided
convolution) -> `ViTConfig` and its presets -> `ViT.embed` (the token sequence) ->
`ViT.features` / `ViT.forward_from_embeddings` / `ViT.__call__`.

Token order, fixed everywhere (attention maps, saliency, the lessons):

    [CLS, register_1 .. register_R, patch_0 .. patch_{P-1}]      T = 1 + R + P

with patches in row-major order (patch (i, j) of a g_h x g_w grid is token 1 + R + i*g_w + j).
Register tokens (Darcet et al. 2024, "Vision Transformers Need Registers") are extra
learned tokens without a position and without a loss: they give the network somewhere
other than background patches to store global information. Positions are a learned
table (over CLS and patches) or fixed 2-D sines (patches only; Carion et al. 2020).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.nn import Block, LearnedPositions, Linear
from tinytf.positional import sine_2d
from tinytf.variants import AttentionConfig, get_variant

Array = jax.Array


# --------------------------------------------------------------------- patch embed
def patchify(images: Array, patch_size: int) -> Array:
    """Cut (B, H, W, C) images into p x p patches: (B, (H/p)*(W/p), p*p*C), patches row-major.

    Each patch is flattened in (row, column, channel) order, the order a (p, p, C, D)
    convolution kernel reshaped to (p*p*C, D) expects; `unpatchify` is the inverse.
    """
    p = patch_size
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, H, W, C), got {images.shape}")
    B, H, W, C = images.shape
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not divisible by patch_size={p}")
    x = images.reshape(B, H // p, p, W // p, p, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, (H // p) * (W // p), p * p * C)  # (B, P, p*p*C)


def unpatchify(patches: Array, patch_size: int, grid: tuple[int, int] | None = None) -> Array:
    """The inverse of `patchify`: (B, P, p*p*C) -> (B, g_h*p, g_w*p, C); grid (g_h, g_w), default square."""
    p = patch_size
    if patches.ndim != 3:
        raise ValueError(f"patches must have shape (B, P, p*p*C), got {patches.shape}")
    B, P, F = patches.shape
    if grid is None:
        side = int(round(P ** 0.5))
        grid = (side, side)
    gh, gw = grid
    if gh * gw != P or F % (p * p):
        raise ValueError(f"patches of shape {patches.shape} do not fit a {gh}x{gw} grid of {p}x{p} patches")
    x = patches.reshape(B, gh, gw, p, p, F // (p * p))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, gh * p, gw * p, F // (p * p))


class PatchEmbed(nnx.Module):
    """Cut (B, H, W, C) images into p x p patches and project each to D: (B, P, D), row-major.

    Flatten each patch (row, column, channel order) and multiply by a (p*p*C, D) matrix: the
    same numbers as a convolution with kernel = stride = p, whose (p, p, C, D) kernel `proj`
    holds (an `nnx.Conv`, so checkpoints and initialisation are the convolution's). The matrix
    product is used because XLA's CPU backend runs convolutions inside a compiled training loop
    (`fit`'s `lax.while_loop`) many times slower than outside, while matrix products stay fast.
    """

    def __init__(self, patch_size: int, channels: int, d_model: int, *, rngs: nnx.Rngs):
        self.patch_size, self.channels = patch_size, channels
        self.proj = nnx.Conv(channels, d_model, kernel_size=(patch_size, patch_size),
                             strides=(patch_size, patch_size), padding="VALID", rngs=rngs)

    def __call__(self, images: Array) -> Array:
        """images (B, H, W, C) -> patch embeddings (B, (H/p)*(W/p), D)."""
        p = self.patch_size
        if images.ndim != 4 or images.shape[-1] != self.channels:
            raise ValueError(f"images must have shape (B, H, W, C={self.channels}), got {images.shape}")
        kernel = self.proj.kernel[...]  # (p, p, C, D)
        x = patchify(images.astype(kernel.dtype), p)  # (B, P, p*p*C) row-major
        return x @ kernel.reshape(x.shape[-1], -1) + self.proj.bias[...]  # (B, P, D)


class LinearPatchEmbed(nnx.Module):
    """A patch token = a linear map of the flattened patch (Dosovitskiy et al. 2021, "An Image is Worth
    16x16 Words", eq. 1): `nnx.Linear(p*p*C, D)` on `patchify(images, p)`.

    The same function as `PatchEmbed`, with the matrix's (p*p*C, D) shape and `nnx.Linear`'s
    initialisation instead of the convolution's (p, p, C, D) kernel: the optimiser (and the random
    draw) see another parameter, so trained numbers differ. Swap it in with
    `model.patch_embed = LinearPatchEmbed(...)` (the vit-attention lesson's recipe does).
    """

    def __init__(self, patch_size: int, channels: int, d_model: int, *, rngs: nnx.Rngs):
        self.patch_size, self.channels = patch_size, channels
        self.proj = nnx.Linear(patch_size * patch_size * channels, d_model, rngs=rngs)

    def __call__(self, images: Array) -> Array:
        """images (B, H, W, C) -> patch embeddings (B, (H/p)*(W/p), D)."""
        if images.ndim != 4 or images.shape[-1] != self.channels:
            raise ValueError(f"images must have shape (B, H, W, C={self.channels}), got {images.shape}")
        return self.proj(patchify(images, self.patch_size))  # (B, P, D)


# --------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Shape and switches of a `ViT`. Presets: `ViTConfig.tiny16()`, `ViTConfig.tiny32()`."""

    image_size: int = 16
    patch_size: int = 4
    channels: int = 3
    num_classes: int = 10
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_registers: int = 0
    """Register tokens (Darcet et al. 2024); 4 is the paper's usual choice."""
    position: str = "learned"
    """"learned" (a table over CLS + patches), "sine2d" (fixed, patches only) or "none"."""
    attention: AttentionConfig | str = AttentionConfig()
    """An AttentionConfig or a variant name; position must stay "none" (patch order is 2-D)."""
    pool: str = "cls"
    """"cls": classify from the CLS token; "mean": from the mean of the patch tokens."""
    norm: str = "pre"
    activation: str = "gelu"

    def __post_init__(self):
        for name in ("image_size", "patch_size", "channels", "num_classes", "d_model", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ViTConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_registers, int) or self.num_registers < 0:
            raise ValueError(f"ViTConfig.num_registers must be an int >= 0, got {self.num_registers!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig.image_size={self.image_size} is not divisible by "
                             f"patch_size={self.patch_size}")
        if self.d_model % self.num_heads:
            raise ValueError(f"ViTConfig.d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"ViTConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if self.position not in ("learned", "sine2d", "none"):
            raise ValueError(f"ViTConfig.position must be 'learned', 'sine2d' or 'none', got {self.position!r}")
        if self.position == "sine2d" and self.d_model % 4:
            raise ValueError(f"position='sine2d' needs d_model divisible by 4, got {self.d_model}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"ViTConfig.pool must be 'cls' or 'mean', got {self.pool!r}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"ViTConfig.norm must be 'pre' or 'post', got {self.norm!r}")
        attention = get_variant(self.attention)
        if attention.position != "none":
            raise ValueError(f"attention.position={attention.position!r}: a ViT's tokens have no 1-D order; "
                             "use ViTConfig.position ('learned' or 'sine2d')")
        object.__setattr__(self, "attention", attention)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """P = grid**2."""
        return self.grid ** 2

    @property
    def num_tokens(self) -> int:
        """T = 1 + R + P (CLS, registers, patches)."""
        return 1 + self.num_registers + self.num_patches

    def replace(self, **changes) -> "ViTConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny16(cls, **overrides) -> "ViTConfig":
        """16x16 images, 4x4 patches (16 tokens + CLS), 2 layers, d=64, 4 heads."""
        return cls(**{**dict(image_size=16, patch_size=4, d_model=64, num_layers=2, num_heads=4), **overrides})

    @classmethod
    def tiny32(cls, **overrides) -> "ViTConfig":
        """32x32 images, 4x4 patches (64 tokens + CLS), 2 layers, d=64, 4 heads."""
        return cls(**{**dict(image_size=32, patch_size=4, d_model=64, num_layers=2, num_heads=4), **overrides})


# ---------------------------------------------------------------------------- model
class ViT(nnx.Module):
    """Patch embedding + CLS (+ registers) + positions -> encoder Blocks -> LayerNorm -> linear head.

    Blocks live in `self.blocks` (capture names "blocks.0.attn", ...); attention maps
    are (B, N, T, T) over the token order in the module docstring.
    """

    def __init__(self, config: ViTConfig | None = None, *, rngs: nnx.Rngs):
        config = ViTConfig.tiny16() if config is None else config
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        self.config = config
        D, R = config.d_model, config.num_registers
        self.patch_embed = PatchEmbed(config.patch_size, config.channels, D, rngs=rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, D), jnp.float32))
        self.registers = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, R, D))) if R else None
        self.position_embed = (LearnedPositions(1 + config.num_patches, D, rngs=rngs)
                               if config.position == "learned" else None)
        self.blocks = nnx.List([
            Block(D, config.num_heads, attention=config.attention, mlp_ratio=config.mlp_ratio, norm=config.norm,
                  activation=config.activation, rngs=rngs)
            for _ in range(config.num_layers)])
        self.final_norm = nnx.LayerNorm(D, rngs=rngs) if config.norm == "pre" else None
        self.head = Linear(D, config.num_classes, rngs=rngs)

    def embed(self, images: Array) -> Array:
        """The token sequence the blocks see: [CLS, registers, patches] with positions added.

        Args:
          images: (B, H, W, C) with H = W = image_size.

        Returns:
          (B, T, D), T = 1 + R + P; differentiate `forward_from_embeddings` w.r.t. it for
          gradient x input saliency (patch tokens are [:, 1 + R:]).
        """
        cfg = self.config
        if images.ndim != 4 or images.shape[1:3] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"images must have shape (B, {cfg.image_size}, {cfg.image_size}, {cfg.channels}), "
                             f"got {images.shape}")
        patches = self.patch_embed(images)  # (B, P, D)
        B, P, D = patches.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(patches.dtype), (B, 1, D))
        x = jnp.concatenate([cls, patches], axis=1)  # (B, 1 + P, D)
        if cfg.position == "learned":
            x = x + self.position_embed(jnp.arange(1 + P)).astype(x.dtype)
        elif cfg.position == "sine2d":  # patches only; CLS has no place in the grid
            pe = sine_2d(cfg.grid, cfg.grid, D)  # (P, D) row-major
            x = x + jnp.concatenate([jnp.zeros((1, D)), pe])[None].astype(x.dtype)
        if self.registers is not None:  # registers carry no position
            reg = jnp.broadcast_to(self.registers[...].astype(x.dtype), (B, cfg.num_registers, D))
            x = jnp.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)  # (B, 1 + R + P, D)
        return x

    def encode(self, tokens: Array) -> Array:
        """Run the blocks: (B, T, D) -> (B, T, D), before the final LayerNorm."""
        cfg = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (cfg.num_tokens, cfg.d_model):
            raise ValueError(f"tokens must have shape (B, T={cfg.num_tokens}, D={cfg.d_model}) "
                             f"(CLS + {cfg.num_registers} registers + {cfg.num_patches} patches), got {tokens.shape}")
        for block in self.blocks:
            tokens = block(tokens)
        return tokens

    def features(self, images: Array) -> Array:
        """Output tokens of the last block, (B, T, D), before the final norm (Darcet et al. measure their norms)."""
        return self.encode(self.embed(images))

    def forward_from_embeddings(self, tokens: Array) -> Array:
        """Logits from the token sequence returned by `embed`: (B, T, D) -> (B, num_classes)."""
        h = self.encode(tokens)
        if self.final_norm is not None:
            h = self.final_norm(h)
        pooled = h[:, 0] if self.config.pool == "cls" else h[:, 1 + self.config.num_registers:].mean(axis=1)
        return self.head(pooled)  # (B, num_classes)

    def __call__(self, images: Array) -> Array:
        """Class logits: images (B, H, W, C) -> (B, num_classes)."""
        return self.forward_from_embeddings(self.embed(images))


__all__ = ["PatchEmbed", "ViTConfig", "ViT", "patchify", "unpatchify"]
