"""tinytf.diagnostics.position_shift_error: RoPE is relative, an added code is not (numpy logits as oracle)."""

import jax
import numpy as np
import pytest

from tinytf.diagnostics import position_shift_error
from tinytf.positional import apply_rope, sinusoidal

Q = np.asarray(jax.random.normal(jax.random.key(0), (3, 11, 5, 8)))
K = np.asarray(jax.random.normal(jax.random.key(1), (3, 11, 5, 8)))


def test_rope_is_shift_invariant_and_identity_exactly():
    np.testing.assert_array_less(position_shift_error(apply_rope, Q, K, [1, 7, 129]), 1e-5)
    np.testing.assert_array_equal(position_shift_error(lambda x, p: x, Q, K, [3, 5]), 0.0)


def test_added_code_matches_a_numpy_computation():
    def added(x, p):
        return x + np.asarray(sinusoidal(int(p.max()) + 1, 8))[np.asarray(p)][None, :, None, :]

    got = position_shift_error(added, Q, K, [2, 9])
    base = np.einsum("btnh,bsnh->bnts", added(Q, np.arange(11)), added(K, np.arange(11)))
    for s, g in zip([2, 9], got):
        moved = np.einsum("btnh,bsnh->bnts", added(Q, np.arange(11) + s), added(K, np.arange(11) + s))
        np.testing.assert_allclose(g, np.abs(moved - base).max() / np.abs(base).max(), rtol=1e-4)
    assert got.min() > 0.05


def test_shape_error():
    with pytest.raises(ValueError, match=r"query \(3, 11, 5, 8\) and key \(3, 7, 5, 8\)"):
        position_shift_error(apply_rope, Q, K[:, :7], [1])
