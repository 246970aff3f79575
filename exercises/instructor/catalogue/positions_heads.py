"""Exercises 4-6 (lessons positions and heads): sinusoids, RoPE, multi-head attention."""

from __future__ import annotations

import numpy as np

from ._build import IGNORES_BASE, NO_SCALE, calls, exercise, patched, rewritten
from ._gen import causal, distinct, normal


# ----------------------------------------------------------------------------- 4. sinusoidal
on_sinusoidal = calls("sinusoidal_encoding")
SINUSOIDAL = exercise("04_sinusoidal", "sinusoidal position encodings", "positions", checks=(
    on_sinusoidal.check("length=7, dim=12", lambda rng: {"length": 7, "dim": 12}, atol=1e-4),
    on_sinusoidal.check("length=11, dim=6, base=100", lambda rng: {"length": 11, "dim": 6, "base": 100.0}, atol=1e-4),
    on_sinusoidal.check("odd dim raises ValueError", lambda rng: {"length": 5, "dim": 7}, raises="ValueError"),
    on_sinusoidal.hidden(
        "random length, dim and base",
        lambda rng: {
            "length": int(rng.choice([9, 13, 17])),
            "dim": int(rng.choice([10, 14])),
            "base": float(rng.choice([10000.0, 500.0])),
        },
        atol=1e-4,
    ),
    on_sinusoidal.hidden("long sequence", lambda rng: {"length": int(rng.integers(40, 90)), "dim": 8}, atol=1e-4),
), mutants=(
    patched(
        "sin_cos_swapped",
        "sin and cos are swapped: column 2i holds sin(p * w_i), column 2i+1 holds cos(p * w_i)",
        (
            "pe[:, 0::2] = np.sin(angle)\n    pe[:, 1::2] = np.cos(angle)",
            "pe[:, 0::2] = np.cos(angle)\n    pe[:, 1::2] = np.sin(angle)",
        ),
    ),
    patched(
        "concatenated",
        "sines and cosines are concatenated [sin | cos]; in this exercise (and in the paper) they interleave: "
        "column 2i is sin, column 2i+1 the cos of the same frequency",
        (
            "pe[:, 0::2] = np.sin(angle)\n    pe[:, 1::2] = np.cos(angle)",
            "pe[:] = np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)",
        ),
    ),
    patched(
        "wrong_exponent",
        "wrong frequencies: pair i uses w_i = base^(-2i/dim) (the even column index 2i over dim), not "
        "base^(-i/dim)",
        ("-np.arange(0, dim, 2) / dim", "-np.arange(dim // 2) / dim"),
    ),
    patched(
        "positions_from_one",
        "positions start at 0: row p encodes position p = 0, 1, ...",
        ("np.arange(length, dtype=np.float64)", "np.arange(1, length + 1, dtype=np.float64)"),
    ),
    patched(
        "ignores_base",
        IGNORES_BASE,
        ("freq = base ** (", "freq = 10000.0 ** ("),
    ),
))


# ----------------------------------------------------------------------------- 5. RoPE
def _rope(rng, b=2, t=5, n=3, h=8, positions=None, base=None):
    out = {"x": normal(rng, b, t, n, h), "positions": np.arange(t) if positions is None else positions}
    if base is not None:
        out["base"] = base
    return out


def _hidden_rope(rng):
    b, t, n = distinct(rng, 3, (2, 3, 5, 7))
    h = int(rng.choice([6, 10]))
    return _rope(rng, b, t, n, h, positions=rng.integers(0, 60, size=(b, t)))


on_rope = calls("apply_rope")
ROPE = exercise("05_rope", "rotary position embedding (RoPE)", "positions", checks=(
    on_rope.check("x (2, 5, 3, 8), positions 0..4", lambda rng: _rope(rng), atol=1e-4),
    on_rope.check(
        "per-example positions (B, T)",
        lambda rng: _rope(rng, positions=rng.integers(0, 40, size=(2, 5))),
        atol=1e-4,
    ),
    on_rope.check(
        "base=100, positions 0, 3, ..., 12",
        lambda rng: _rope(rng, positions=3 * np.arange(5), base=100.0),
        atol=1e-4,
    ),
    on_rope.check("odd head dim raises ValueError", lambda rng: _rope(rng, h=7), raises="ValueError"),
    on_rope.hidden("random sizes and positions", _hidden_rope, atol=1e-4),
    on_rope.hidden(
        "per-example positions, base=50",
        lambda rng: _rope(rng, 3, 5, 2, 6, positions=rng.integers(0, 200, size=(3, 5)), base=50.0),
        atol=1e-4,
    ),
    on_rope.hidden(
        "base=500, shared positions",
        lambda rng: _rope(rng, 3, 7, 2, 12, positions=rng.integers(0, 50, size=7), base=500.0),
        atol=1e-4,
    ),
), mutants=(
    rewritten(
        "half_split",
        "rotated the wrong pairs: (i, i + H/2), the 'half-split' GPT-NeoX layout; this exercise (and RoFormer, "
        "and tinytf) rotates interleaved pairs (2i, 2i+1)",
        """
def apply_rope(x, positions, base=10000.0):
    x = np.asarray(x, np.float64)
    B, T, N, H = x.shape
    if H % 2:
        raise ValueError("odd")
    theta = base ** (-np.arange(0, H, 2) / H)
    angle = np.asarray(positions, np.float64)[..., None] * theta
    cos = np.cos(angle)[..., None, :]
    sin = np.sin(angle)[..., None, :]
    first, second = x[..., : H // 2], x[..., H // 2:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
""",
    ),
    patched(
        "wrong_direction",
        "rotated by minus the angle: out[2i] = x[2i] cos - x[2i+1] sin, out[2i+1] = x[2i] sin + x[2i+1] cos",
        (
            "out[..., 0::2] = even * cos - odd * sin\n    out[..., 1::2] = even * sin + odd * cos",
            "out[..., 0::2] = even * cos + odd * sin\n    out[..., 1::2] = -even * sin + odd * cos",
        ),
    ),
    patched(
        "wrong_frequency",
        "wrong frequencies: pair i rotates at theta_i = base^(-2i/H), not base^(-i/H)",
        ("base ** (-np.arange(0, H, 2) / H)", "base ** (-np.arange(H // 2) / H)"),
    ),
    patched(
        "ignores_positions",
        "the positions argument was ignored (0..T-1 was used): rotate by the positions given",
        ("np.asarray(positions, np.float64)[..., None]", "np.arange(T, dtype=np.float64)[..., None]"),
    ),
    patched(
        "ignores_base",
        IGNORES_BASE,
        ("theta = base ** (", "theta = 10000.0 ** ("),
    ),
))


# ----------------------------------------------------------------------------- 6. heads
def _weights(rng, d):
    return {name: normal(rng, d, d, scale=1.0 / np.sqrt(d)) for name in ("w_q", "w_k", "w_v", "w_o")}


def _mha(rng, b=2, t=5, n=3, h=4, mask=None, scale=2.0):
    x = normal(rng, b, t, n * h)
    w = _weights(rng, n * h)
    w["w_q"] = w["w_q"] * scale  # sharper attention, so scaling mistakes show
    out = {"x": x, **w, "num_heads": n}
    if mask is not None:
        out["mask"] = mask
    return out


def _hidden_mha(rng):
    b, t, n, h = distinct(rng, 4, (2, 3, 5, 7))
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    return _mha(rng, b, t, n, h, mask=mask)


on_mha = calls("multi_head_attention")
on_merge_heads = calls("merge_heads")
on_split_heads = calls("split_heads")
HEADS = exercise("06_heads", "split/merge heads and multi-head attention", "heads", checks=(
    on_split_heads.check(
        "split_heads: (2, 5, 12) into 3 heads",
        lambda rng: {"x": normal(rng, 2, 5, 12), "num_heads": 3},
    ),
    on_merge_heads.check("merge_heads: (2, 5, 3, 4) back to (2, 5, 12)", lambda rng: {"x": normal(rng, 2, 5, 3, 4)}),
    on_split_heads.check(
        "split_heads raises ValueError when D is not divisible by num_heads",
        lambda rng: {"x": normal(rng, 2, 5, 12), "num_heads": 5},
        raises="ValueError",
    ),
    on_mha.check("multi_head_attention: B=2, T=5, D=12, 3 heads, no mask", lambda rng: _mha(rng)),
    on_mha.check("multi_head_attention with a causal mask", lambda rng: _mha(rng, mask=causal(5))),
    on_split_heads.hidden("split_heads, random sizes", lambda rng: {"x": normal(rng, 3, 7, 10), "num_heads": 2}),
    on_merge_heads.hidden("merge_heads, random sizes", lambda rng: {"x": normal(rng, *distinct(rng, 4, (2, 3, 5, 7)))}),
    on_mha.hidden(
        "multi_head_attention with a causal mask, 5 heads",
        lambda rng: _mha(rng, 3, 7, 5, 2, mask=causal(7)),
    ),
    on_mha.hidden("multi_head_attention, random sizes, padding mask", _hidden_mha),
), mutants=(
    patched(
        "split_wrong_axis",
        "heads split along the wrong axis: reshape D as (N, H) so head n owns the contiguous features [n*H, "
        "(n+1)*H); reshaping as (H, N) gives head n every N-th feature",
        (
            "x.reshape(B, T, num_heads, D // num_heads)  # (B, T, N, H)",
            "x.reshape(B, T, D // num_heads, num_heads).swapaxes(-1, -2)",
        ),
    ),
    patched(
        "split_heads_first",
        "split_heads returned (B, N, T, H); keep tinytf's layout (B, T, N, H)",
        (
            "x.reshape(B, T, num_heads, D // num_heads)  # (B, T, N, H)",
            "x.reshape(B, T, num_heads, D // num_heads).transpose(0, 2, 1, 3)",
        ),
    ),
    patched(
        "merge_transposed",
        "heads merged in the wrong order (as (H, N)): merge_heads must undo split_heads, putting head n's "
        "features back at [n*H, (n+1)*H)",
        ("x.reshape(B, T, N * H)  # (B, T, D)", "x.swapaxes(-1, -2).reshape(B, T, N * H)"),
    ),
    patched(
        "scale_by_model_dim",
        "logits scaled by 1/sqrt(D), the model width; each head scales by its own width, 1/sqrt(H) with H = D / "
        "num_heads",
        (" / np.sqrt(H)  # (B, N, T, S)", " / np.sqrt(H * q.shape[2])"),
    ),
    patched("no_scale", NO_SCALE, (" / np.sqrt(H)  # (B, N, T, S)", "")),
    patched(
        "no_output_projection",
        "the output projection is missing: multiply the merged heads by w_o",
        ("    return out @ w_o", "    return out"),
    ),
    patched(
        "mask_ignored",
        "the mask was ignored: masked keys must get weight exactly 0",
        ("np.ones((), bool) if mask is None else np.asarray(mask, bool)", "np.ones((), bool)"),
    ),
))
