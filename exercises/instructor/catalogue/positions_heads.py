"""Exercises 4-6 (lessons positions and heads): sinusoids, RoPE, multi-head attention."""

from __future__ import annotations

import numpy as np

from ._gen import causal, distinct, normal
from tinytf.grading.core import Check, Exercise, Mutant

# ----------------------------------------------------------------------------- 4. sinusoidal
SINUSOIDAL = Exercise(
    number=4,
    slug="sinusoidal",
    title="sinusoidal position encodings",
    lesson="positions",
    functions=("sinusoidal_encoding",),
    checks=(
        Check(
            name="length=7, dim=12",
            function="sinusoidal_encoding",
            inputs=lambda rng: {"length": 7, "dim": 12},
            atol=1e-4,
        ),
        Check(
            name="length=11, dim=6, base=100",
            function="sinusoidal_encoding",
            inputs=lambda rng: {"length": 11, "dim": 6, "base": 100.0},
            atol=1e-4,
        ),
        Check(
            name="odd dim raises ValueError",
            function="sinusoidal_encoding",
            raises="ValueError",
            inputs=lambda rng: {"length": 5, "dim": 7},
        ),
        Check(
            name="hidden: random length, dim and base",
            function="sinusoidal_encoding",
            hidden=True,
            atol=1e-4,
            inputs=lambda rng: {
                "length": int(rng.choice([9, 13, 17])),
                "dim": int(rng.choice([10, 14])),
                "base": float(rng.choice([10000.0, 500.0])),
            },
        ),
        Check(
            name="hidden: long sequence",
            function="sinusoidal_encoding",
            hidden=True,
            atol=1e-4,
            inputs=lambda rng: {"length": int(rng.integers(40, 90)), "dim": 8},
        ),
    ),
    mutants=(
        Mutant(
            id="sin_cos_swapped",
            mistake="sin and cos are swapped: column 2i holds sin(p * w_i), column 2i+1 holds cos(p * w_i)",
            patch=(
                (
                    "pe[:, 0::2] = np.sin(angle)\n    pe[:, 1::2] = np.cos(angle)",
                    "pe[:, 0::2] = np.cos(angle)\n    pe[:, 1::2] = np.sin(angle)",
                ),
            ),
        ),
        Mutant(
            id="concatenated",
            mistake="sines and cosines are concatenated [sin | cos]; in this exercise (and in the paper) they "
            "interleave: column 2i is sin, column 2i+1 the cos of the same frequency",
            patch=(
                (
                    "pe[:, 0::2] = np.sin(angle)\n    pe[:, 1::2] = np.cos(angle)",
                    "pe[:] = np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)",
                ),
            ),
        ),
        Mutant(
            id="wrong_exponent",
            mistake="wrong frequencies: pair i uses w_i = base^(-2i/dim) (the even column index 2i over dim), "
            "not base^(-i/dim)",
            patch=(("-np.arange(0, dim, 2) / dim", "-np.arange(dim // 2) / dim"),),
        ),
        Mutant(
            id="positions_from_one",
            mistake="positions start at 0: row p encodes position p = 0, 1, ...",
            patch=(("np.arange(length, dtype=np.float64)", "np.arange(1, length + 1, dtype=np.float64)"),),
        ),
        Mutant(
            id="ignores_base",
            mistake="the `base` argument was ignored (10000 was used)",
            patch=(("freq = base ** (", "freq = 10000.0 ** ("),),
        ),
    ),
)


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


ROPE = Exercise(
    number=5,
    slug="rope",
    title="rotary position embedding (RoPE)",
    lesson="positions",
    functions=("apply_rope",),
    checks=(
        Check(name="x (2, 5, 3, 8), positions 0..4", function="apply_rope", inputs=lambda rng: _rope(rng), atol=1e-4),
        Check(
            name="per-example positions (B, T)",
            function="apply_rope",
            atol=1e-4,
            inputs=lambda rng: _rope(rng, positions=rng.integers(0, 40, size=(2, 5))),
        ),
        Check(
            name="base=100, positions 0, 3, ..., 12",
            function="apply_rope",
            atol=1e-4,
            inputs=lambda rng: _rope(rng, positions=3 * np.arange(5), base=100.0),
        ),
        Check(
            name="odd head dim raises ValueError",
            function="apply_rope",
            raises="ValueError",
            inputs=lambda rng: _rope(rng, h=7),
        ),
        Check(
            name="hidden: random sizes and positions",
            function="apply_rope",
            hidden=True,
            atol=1e-4,
            inputs=_hidden_rope,
        ),
        Check(
            name="hidden: per-example positions, base=50",
            function="apply_rope",
            hidden=True,
            atol=1e-4,
            inputs=lambda rng: _rope(rng, 3, 5, 2, 6, positions=rng.integers(0, 200, size=(3, 5)), base=50.0),
        ),
        Check(
            name="hidden: base=500, shared positions",
            function="apply_rope",
            hidden=True,
            atol=1e-4,
            inputs=lambda rng: _rope(rng, 3, 7, 2, 12, positions=rng.integers(0, 50, size=7), base=500.0),
        ),
    ),
    mutants=(
        Mutant(
            id="half_split",
            mistake="rotated the wrong pairs: (i, i + H/2), the 'half-split' GPT-NeoX layout; this exercise "
            "(and RoFormer, and tinytf) rotates interleaved pairs (2i, 2i+1)",
            append="""
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
        Mutant(
            id="wrong_direction",
            mistake="rotated by minus the angle: out[2i] = x[2i] cos - x[2i+1] sin, "
            "out[2i+1] = x[2i] sin + x[2i+1] cos",
            patch=(
                (
                    "out[..., 0::2] = even * cos - odd * sin\n    out[..., 1::2] = even * sin + odd * cos",
                    "out[..., 0::2] = even * cos + odd * sin\n    out[..., 1::2] = -even * sin + odd * cos",
                ),
            ),
        ),
        Mutant(
            id="wrong_frequency",
            mistake="wrong frequencies: pair i rotates at theta_i = base^(-2i/H), not base^(-i/H)",
            patch=(("base ** (-np.arange(0, H, 2) / H)", "base ** (-np.arange(H // 2) / H)"),),
        ),
        Mutant(
            id="ignores_positions",
            mistake="the positions argument was ignored (0..T-1 was used): rotate by the positions given",
            patch=(("np.asarray(positions, np.float64)[..., None]", "np.arange(T, dtype=np.float64)[..., None]"),),
        ),
        Mutant(
            id="ignores_base",
            mistake="the `base` argument was ignored (10000 was used)",
            patch=(("theta = base ** (", "theta = 10000.0 ** ("),),
        ),
    ),
)


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


HEADS = Exercise(
    number=6,
    slug="heads",
    title="split/merge heads and multi-head attention",
    lesson="heads",
    functions=("split_heads", "merge_heads", "multi_head_attention"),
    checks=(
        Check(
            name="split_heads: (2, 5, 12) into 3 heads",
            function="split_heads",
            inputs=lambda rng: {"x": normal(rng, 2, 5, 12), "num_heads": 3},
        ),
        Check(
            name="merge_heads: (2, 5, 3, 4) back to (2, 5, 12)",
            function="merge_heads",
            inputs=lambda rng: {"x": normal(rng, 2, 5, 3, 4)},
        ),
        Check(
            name="split_heads raises ValueError when D is not divisible by num_heads",
            function="split_heads",
            raises="ValueError",
            inputs=lambda rng: {"x": normal(rng, 2, 5, 12), "num_heads": 5},
        ),
        Check(
            name="multi_head_attention: B=2, T=5, D=12, 3 heads, no mask",
            function="multi_head_attention",
            inputs=lambda rng: _mha(rng),
        ),
        Check(
            name="multi_head_attention with a causal mask",
            function="multi_head_attention",
            inputs=lambda rng: _mha(rng, mask=causal(5)),
        ),
        Check(
            name="hidden: split_heads, random sizes",
            function="split_heads",
            hidden=True,
            inputs=lambda rng: {"x": normal(rng, 3, 7, 10), "num_heads": 2},
        ),
        Check(
            name="hidden: merge_heads, random sizes",
            function="merge_heads",
            hidden=True,
            inputs=lambda rng: {"x": normal(rng, *distinct(rng, 4, (2, 3, 5, 7)))},
        ),
        Check(
            name="hidden: multi_head_attention with a causal mask, 5 heads",
            function="multi_head_attention",
            hidden=True,
            inputs=lambda rng: _mha(rng, 3, 7, 5, 2, mask=causal(7)),
        ),
        Check(
            name="hidden: multi_head_attention, random sizes, padding mask",
            function="multi_head_attention",
            hidden=True,
            inputs=_hidden_mha,
        ),
    ),
    mutants=(
        Mutant(
            id="split_wrong_axis",
            mistake="heads split along the wrong axis: reshape D as (N, H) so head n owns the contiguous "
            "features [n*H, (n+1)*H); reshaping as (H, N) gives head n every N-th feature",
            patch=(
                (
                    "x.reshape(B, T, num_heads, D // num_heads)  # (B, T, N, H)",
                    "x.reshape(B, T, D // num_heads, num_heads).swapaxes(-1, -2)",
                ),
            ),
        ),
        Mutant(
            id="split_heads_first",
            mistake="split_heads returned (B, N, T, H); keep tinytf's layout (B, T, N, H)",
            patch=(
                (
                    "x.reshape(B, T, num_heads, D // num_heads)  # (B, T, N, H)",
                    "x.reshape(B, T, num_heads, D // num_heads).transpose(0, 2, 1, 3)",
                ),
            ),
        ),
        Mutant(
            id="merge_transposed",
            mistake="heads merged in the wrong order (as (H, N)): merge_heads must undo split_heads, putting "
            "head n's features back at [n*H, (n+1)*H)",
            patch=(("x.reshape(B, T, N * H)  # (B, T, D)", "x.swapaxes(-1, -2).reshape(B, T, N * H)"),),
        ),
        Mutant(
            id="scale_by_model_dim",
            mistake="logits scaled by 1/sqrt(D), the model width; each head scales by its own width, "
            "1/sqrt(H) with H = D / num_heads",
            patch=((" / np.sqrt(H)  # (B, N, T, S)", " / np.sqrt(H * q.shape[2])"),),
        ),
        Mutant(
            id="no_scale",
            mistake="the logits were not scaled: divide q·k by sqrt(H), H the head dim",
            patch=((" / np.sqrt(H)  # (B, N, T, S)", ""),),
        ),
        Mutant(
            id="no_output_projection",
            mistake="the output projection is missing: multiply the merged heads by w_o",
            patch=(("    return out @ w_o", "    return out"),),
        ),
        Mutant(
            id="mask_ignored",
            mistake="the mask was ignored: masked keys must get weight exactly 0",
            patch=(("np.ones((), bool) if mask is None else np.asarray(mask, bool)", "np.ones((), bool)"),),
        ),
    ),
)
