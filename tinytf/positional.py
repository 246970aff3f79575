"""Positional information: how attention, which is order-blind, learns where tokens are.

Self-attention without positions is permutation-equivariant: shuffle the tokens
and the outputs shuffle the same way. Five ways to break that symmetry:

  1. `sinusoidal`  — fixed sines/cosines added to the embeddings (Vaswani et al. 2017).
  2. learned       — a trainable table added to the embeddings (BERT, GPT-2, ViT);
                     it is a plain parameter, see `tinytf.nn.LearnedPositions`.
  3. `sine_2d`     — the 2-D version for an H x W feature map (DETR, Carion et al. 2020).
  4. `apply_rope`  — rotate query/key pairs by a position-dependent angle, so the
                     logit depends only on the offset i - j (RoFormer, Su et al. 2021);
                     interleaved or half-split pairs, partial rotary, position scaling.
  5. `alibi_bias`  — a per-head linear penalty on distance added to the logits
                     (ALiBi, Press et al. 2022).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.checks import check_int

Array = jax.Array


def sinusoidal(length: int, dim: int, *, base: float = 10000.0, offset: int = 0) -> Array:
    """Sinusoidal position encodings (Vaswani et al. 2017, section 3.5).

    Math: PE[p, 2i] = sin(p / base^(2i/dim)),  PE[p, 2i+1] = cos(p / base^(2i/dim)).

    Args:
      length: number of positions.
      dim: encoding width (even).
      offset: first position.

    Returns:
      (length, dim) float32.
    """
    length = check_int("length", length, low=1)
    offset = check_int("offset", offset, low=0)
    if check_int("dim", dim, low=2) % 2:
        raise ValueError(f"dim must be even for sinusoidal encodings, got {dim}")
    # A constant table: numpy (float64, rounded once to float32) costs no device ops, so building
    # a model compiles nothing here
    pos = np.arange(offset, offset + length, dtype=np.float64)[:, None]  # (L, 1)
    freq = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # (dim/2,)
    angle = pos * freq  # (L, dim/2)
    pe = np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # (L, dim/2, 2): interleave sin, cos
    return jnp.asarray(pe.reshape(length, dim), jnp.float32)


def sine_2d(height: int, width: int, dim: int, *, temperature: float = 10000.0,
            normalize: bool = False, scale: float = 2 * math.pi) -> Array:
    """2-D sine encodings for an H x W grid, DETR style (Carion et al. 2020).

    Half of the channels encode the row, half the column, each as a 1-D sine code
    of the (1-based) pixel coordinate. With `normalize=True` coordinates are first
    mapped to (0, scale] as in DETR's "normalize" option.

    Note for small maps: DETR's default (temperature 10000 on *pixel* coordinates)
    is fine on 8x8; frequencies much above pi per cell alias and turn the code
    into noise (see `tinytf.diagnostics` for a check).

    Returns:
      (height * width, dim) float32, row-major (row 0 first), rows = flattened cells.
    """
    height, width = check_int("height", height, low=1), check_int("width", width, low=1)
    if check_int("dim", dim, low=4) % 4:
        raise ValueError(f"dim must be divisible by 4 for 2-D sine encodings, got {dim}")
    y = np.arange(1, height + 1, dtype=np.float64)  # a constant table: numpy, as `sinusoidal`
    x = np.arange(1, width + 1, dtype=np.float64)
    if normalize:
        y = y / height * scale
        x = x / width * scale
    half = dim // 2
    freq = temperature ** (-np.arange(0, half, 2, dtype=np.float64) / half)  # (half/2,)

    def code(c):  # (L,) -> (L, half) interleaved sin/cos
        a = c[:, None] * freq  # (L, half/2)
        return np.stack([np.sin(a), np.cos(a)], axis=-1).reshape(c.shape[0], half)

    ey = np.broadcast_to(code(y)[:, None, :], (height, width, half))  # (H, W, half)
    ex = np.broadcast_to(code(x)[None, :, :], (height, width, half))
    return jnp.asarray(np.concatenate([ey, ex], axis=-1).reshape(height * width, dim), jnp.float32)


ROPE_STYLES = ("interleaved", "halves")


def rope_angles(positions: Array, head_dim: int, *, base: float = 10000.0, scale: float = 1.0) -> tuple[Array, Array]:
    """cos and sin of RoPE's angles (p * scale) * theta_i, theta_i = base^(-2i/H).

    Args:
      positions: (..., T) int or float positions.
      head_dim: H, the number of rotated channels (even).
      base: the frequency base (10000 in RoFormer; larger bases stretch the wavelengths).
      scale: multiplies the positions: position interpolation (Chen et al. 2023) uses
        scale = L_train / L_test < 1 so that a longer context maps into trained angles.

    Returns:
      cos, sin: (..., T, H/2) float32.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    theta = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)  # (H/2,)
    p = jnp.asarray(positions, jnp.float32)
    if scale != 1.0:
        p = p * scale
    angle = p[..., None] * theta  # (..., T, H/2)
    return jnp.cos(angle), jnp.sin(angle)


def rope_dims(head_dim: int, fraction: float = 1.0) -> int:
    """How many channels partial rotary rotates: the largest even number <= fraction * H (at least 2)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"rope fraction must be in (0, 1], got {fraction!r}")
    return max(2, int(fraction * head_dim) // 2 * 2)


def apply_rope(x: Array, positions: Array | None = None, *, base: float = 10000.0, style: str = "interleaved",
               fraction: float = 1.0, scale: float = 1.0) -> Array:
    """Rotary position embedding (Su et al. 2021, RoFormer).

    Each pair of channels is rotated by the angle p * theta_i:
        [a, b] -> [a cos - b sin,  a sin + b cos].
    Rotations compose, so <R(p) q, R(r) k> = <q, R(r - p) k>: the logit depends on
    positions only through their offset (relative positions), and applying RoPE to
    queries and keys only (not values) is all it takes.

    Which channels form a pair is a convention, and the two in use are NOT
    interchangeable: weights trained with one give garbage under the other, so match
    the checkpoint you load.
      style="interleaved": pairs (2i, 2i+1) — the RoFormer paper, Meta's Llama code.
      style="halves":      pairs (i, i + H/2) — GPT-NeoX, Hugging Face transformers.

    Args:
      x: (B, T, N, H) queries or keys.
      positions: (T,) or (B, T), int or float; default 0..T-1.
      base: frequency base (see `rope_angles`).
      style: "interleaved" or "halves" (see above).
      fraction: partial rotary (GPT-NeoX, GPT-J): rotate only the first
        `rope_dims(H, fraction)` channels and pass the rest through unchanged.
      scale: multiply positions (position interpolation, Chen et al. 2023).

    Returns:
      (B, T, N, H), same dtype as x.
    """
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"apply_rope expects (B, T, N, H), got shape {getattr(x, 'shape', x)}")
    if style not in ROPE_STYLES:
        raise ValueError(f"style must be one of {ROPE_STYLES}, got {style!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
        raise ValueError(f"base must be a number > 1, got {base!r}")
    B, T, N, H = x.shape
    R = rope_dims(H, fraction) if fraction != 1.0 else H  # rotated channels
    if positions is None:
        positions = jnp.arange(T)
    positions = jnp.asarray(positions)
    if positions.shape not in ((T,), (B, T), (1, T)):
        raise ValueError(f"positions must have shape (T,)=({T},) or (B, T)=({B}, {T}), got {positions.shape}")
    cos, sin = rope_angles(positions, R, base=base, scale=scale)  # (..., T, R/2)
    cos = cos[..., :, None, :]  # (..., T, 1, R/2) broadcast over heads
    sin = sin[..., :, None, :]
    xf = x.astype(jnp.float32)
    rot, rest = (xf, None) if R == H else (xf[..., :R], xf[..., R:])
    if style == "interleaved":
        pairs = rot.reshape(B, T, N, R // 2, 2)  # channel pairs (2i, 2i+1)
        a, b = pairs[..., 0], pairs[..., 1]  # (B, T, N, R/2)
        rotated = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(B, T, N, R)
    else:
        a, b = rot[..., : R // 2], rot[..., R // 2:]  # channel pairs (i, i + R/2)
        rotated = jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    if rest is not None:
        rotated = jnp.concatenate([rotated, rest], axis=-1)
    return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> Array:
    """ALiBi's per-head slopes (Press et al. 2022): a geometric sequence starting at 2^(-8/n).

    For n a power of two the slopes are 2^(-8/n), 2^(-16/n), ...; otherwise the
    paper takes the closest power of two and interleaves the slopes of twice it.

    Returns:
      (num_heads,) float32.
    """
    check_int("num_heads", num_heads, low=1)

    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = powers(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = powers(closest) + powers(2 * closest)[0::2][: num_heads - closest]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias(num_heads: int, q_positions: Array, k_positions: Array) -> Array:
    """ALiBi bias: -slope_h * |i - j| added to the logits.

    Args:
      q_positions: (T,) or (B, T).
      k_positions: (S,) or (B, S).

    Returns:
      (1 or B, N, T, S) float32.
    """
    q = jnp.asarray(q_positions, jnp.float32)
    k = jnp.asarray(k_positions, jnp.float32)
    q = q[None] if q.ndim == 1 else q  # (B, T)
    k = k[None] if k.ndim == 1 else k  # (B, S)
    distance = jnp.abs(q[:, :, None] - k[:, None, :])  # (B, T, S)
    return -alibi_slopes(num_heads)[None, :, None, None] * distance[:, None]  # (B, N, T, S)
