"""Positional encodings against their formulas, and RoPE's relative property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinytf import positional as P


def test_sinusoidal_matches_formula():
    L, D = 7, 10
    pe = np.asarray(P.sinusoidal(L, D))
    p = np.arange(L)[:, None]
    i = np.arange(D // 2)[None, :]
    np.testing.assert_allclose(pe[:, 0::2], np.sin(p / 10000 ** (2 * i / D)), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(p / 10000 ** (2 * i / D)), atol=1e-6)
    np.testing.assert_allclose(P.sinusoidal(3, D, offset=4), pe[4:7], atol=1e-6)


def test_tables_are_float32_and_accurate_at_long_lengths():
    """The tables are computed in float64 and rounded once: at position 8191 a float32 angle
    alone would be off by up to ~5e-4 (half an ulp of 8191), and sin/cos with it."""
    L, D = 8192, 64
    pe = P.sinusoidal(L, D)
    assert isinstance(pe, jax.Array) and pe.dtype == jnp.float32
    angle = np.arange(L)[:, None] / 10000.0 ** (np.arange(0, D, 2)[None, :] / D)
    np.testing.assert_allclose(np.asarray(pe)[:, 0::2], np.sin(angle), atol=1e-7)
    np.testing.assert_allclose(np.asarray(pe)[:, 1::2], np.cos(angle), atol=1e-7)
    grid = P.sine_2d(64, 64, 16, temperature=10.0)
    assert isinstance(grid, jax.Array) and grid.dtype == jnp.float32


def test_sine_2d_layout_and_values():
    Hh, W, D = 3, 5, 12
    pe = np.asarray(P.sine_2d(Hh, W, D))
    assert pe.shape == (Hh * W, D)
    grid = pe.reshape(Hh, W, D)
    # the first half depends only on the row, the second only on the column
    np.testing.assert_allclose(grid[:, :, : D // 2], np.broadcast_to(grid[:, :1, : D // 2], grid[:, :, : D // 2].shape))
    np.testing.assert_allclose(grid[:, :, D // 2:], np.broadcast_to(grid[:1, :, D // 2:], grid[:, :, D // 2:].shape))
    half = D // 2
    freq = 10000 ** (-np.arange(0, half, 2) / half)
    np.testing.assert_allclose(grid[1, 0, 0:half:2], np.sin(2 * freq), atol=1e-6)  # row 1 -> coordinate 2
    np.testing.assert_allclose(grid[0, 3, half + 1::2], np.cos(4 * freq), atol=1e-6)  # column 3 -> 4
    assert len({tuple(np.round(r, 5)) for r in pe}) == Hh * W  # every cell distinct


def rope_numpy(x, pos, base=10000.0):
    """Rotate each channel pair (2i, 2i+1) with an explicit 2x2 rotation matrix."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    Hd = x.shape[-1]
    for t in range(x.shape[1]):
        for i in range(Hd // 2):
            a = pos[t] * base ** (-2 * i / Hd)
            R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            out[:, t, :, 2 * i: 2 * i + 2] = x[:, t, :, 2 * i: 2 * i + 2] @ R.T
    return out


def test_rope_matches_rotation_matrices():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 6))
    pos = np.array([0, 3, 4, 9, 11])
    np.testing.assert_allclose(P.apply_rope(x, jnp.asarray(pos)), rope_numpy(x, pos), atol=1e-5)
    np.testing.assert_allclose(P.apply_rope(x), rope_numpy(x, np.arange(5)), atol=1e-5)


def test_rope_is_relative_and_norm_preserving():
    k1, k2 = jax.random.split(jax.random.key(1))
    q = jax.random.normal(k1, (1, 7, 2, 8))
    k = jax.random.normal(k2, (1, 7, 2, 8))
    pos = jnp.arange(7)
    logits = lambda shift: jnp.einsum("btnh,bsnh->bnts", P.apply_rope(q, pos + shift), P.apply_rope(k, pos + shift))
    np.testing.assert_allclose(logits(0), logits(13), atol=1e-4)  # shift all positions: logits unchanged
    np.testing.assert_allclose(logits(0), logits(101), atol=1e-4)
    np.testing.assert_allclose(jnp.linalg.norm(P.apply_rope(q, pos), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
    plain = jnp.einsum("btnh,bsnh->bnts", q, k)
    assert np.abs(logits(0) - plain).max() > 1e-2  # but it does encode position


def test_alibi():
    np.testing.assert_allclose(P.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)], rtol=1e-6)
    np.testing.assert_allclose(P.alibi_slopes(4), [2.0 ** (-2 * (i + 1)) for i in range(4)], rtol=1e-6)
    s6 = np.asarray(P.alibi_slopes(6))  # non power of two: 4 slopes of n=4, then every other of n=8
    np.testing.assert_allclose(s6, [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3], rtol=1e-6)
    bias = np.asarray(P.alibi_bias(2, jnp.arange(3), jnp.arange(4)))
    assert bias.shape == (1, 2, 3, 4)
    np.testing.assert_allclose(bias[0, 0], -(2 ** -4) * np.abs(np.arange(3)[:, None] - np.arange(4)), rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="even"):
        P.sinusoidal(3, 5)
    with pytest.raises(ValueError, match="divisible by 4"):
        P.sine_2d(2, 2, 6)
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\)=\(5,\)"):
        P.apply_rope(jnp.ones((1, 5, 1, 4)), jnp.arange(4))
    with pytest.raises(ValueError, match="even head dim"):
        P.apply_rope(jnp.ones((1, 5, 1, 3)))
