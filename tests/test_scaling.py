"""tinytf.diagnostics.scaling against numpy: softmax row statistics, the d sweep, equivariance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf.attention import get_normalizer
from tinytf.diagnostics import logit_scale_sweep, normalizer_row_stats, permutation_equivariance_error
from tinytf.nn import Block


def numpy_stats(x, offset=0.0):
    """max weight, entropy, ||diag(p) - p p^T||_F of softmax rows (offset: 1 for softmax1's extra exp(0))."""
    e = np.exp(x - x.max(-1, keepdims=True))
    p = e / (e.sum(-1, keepdims=True) + offset * np.exp(-x.max(-1, keepdims=True)))
    jac = np.einsum("bi,ij->bij", p, np.eye(x.shape[-1])) - p[:, :, None] * p[:, None, :]
    return p.max(-1), -(p * np.log(p)).sum(-1), np.sqrt((jac**2).sum((1, 2)))


def test_row_stats_match_the_closed_form_jacobian():
    x = np.random.default_rng(0).normal(size=(7, 11)).astype(np.float32) * 3
    got = normalizer_row_stats(x)
    for name, want in zip(("max weight", "entropy", "gradient norm"), numpy_stats(x.astype(np.float64))):
        np.testing.assert_allclose(got[name], want, rtol=2e-5, atol=1e-6)


def test_row_stats_of_softmax1_include_the_zero_logit():
    # softmax1: p_i = exp(x_i) / (1 + sum_j exp(x_j)); its Jacobian is also diag(p) - p p^T.
    x = np.random.default_rng(1).normal(size=(5, 13)).astype(np.float32)
    got = normalizer_row_stats(x, get_normalizer("softmax1"))
    want = numpy_stats(x.astype(np.float64), offset=1.0)
    np.testing.assert_allclose(got["max weight"], want[0], rtol=1e-5)
    np.testing.assert_allclose(got["gradient norm"], want[2], rtol=1e-4)


def test_row_stats_limits_and_error():
    uniform = normalizer_row_stats(np.zeros((3, 5), np.float32))
    np.testing.assert_allclose(uniform["entropy"], math.log(5), rtol=1e-6)
    one_hot = normalizer_row_stats(np.array([[100.0, 0, 0, 0, 0]], np.float32))
    assert float(one_hot["gradient norm"][0]) < 1e-6 and float(one_hot["max weight"][0]) == 1.0
    with pytest.raises(ValueError, match=r"logits has shape \(3, 5, 7\): expected \(B, S\)"):
        normalizer_row_stats(np.zeros((3, 5, 7)))


def test_scale_sweep_draws_as_documented_and_scales_the_variance():
    dims = (3, 11, 257)
    sweep = logit_scale_sweep(dims, num_keys=7, rows=64, seed=5)
    rng = np.random.default_rng(5)
    for i, d in enumerate(dims):
        q = rng.standard_normal((64, d), dtype=np.float32)
        k = rng.standard_normal((64, 7, d), dtype=np.float32)
        dots = np.einsum("bh,bsh->bs", q, k).astype(np.float64)
        for name, scale in (("scaled", 1 / math.sqrt(d)), ("unscaled", 1.0)):
            want = numpy_stats(dots * scale)
            np.testing.assert_allclose(sweep[name]["entropy"][i], want[1].mean(), rtol=1e-4)
            np.testing.assert_allclose(sweep[name]["gradient norm"][i], want[2].mean(), rtol=1e-4)
    # q.k has variance d: the scaled logits have std ~1, the unscaled ~sqrt(d)
    np.testing.assert_allclose(sweep["scaled"]["logit std"], 1.0, rtol=0.15)
    np.testing.assert_allclose(sweep["unscaled"]["logit std"], np.sqrt(dims), rtol=0.15)
    with pytest.raises(ValueError, match="dims must be a non-empty sequence of positive ints"):
        logit_scale_sweep(())


def test_block_is_permutation_equivariant_and_positions_break_it():
    block = Block(16, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 7, 16))
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    assert permutation_equivariance_error(block, x, perm) < 1e-5
    with_positions = lambda h: block(h + jnp.arange(7.0)[:, None])  # noqa: E731  absolute positions
    assert permutation_equivariance_error(with_positions, x, perm) > 1e-2
    with pytest.raises(ValueError, match=r"perm must be a permutation of range\(7\)"):
        permutation_equivariance_error(block, x, [0, 1, 2])
