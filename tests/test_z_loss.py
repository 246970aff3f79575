"""z_loss (PaLM) against scipy's logsumexp."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from tinytf.train import z_loss


def test_z_loss_matches_scipy_with_and_without_mask():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 7, 11)) * 4
    mask = rng.random((5, 7)) > 0.4
    z2 = logsumexp(logits, axis=-1) ** 2  # (5, 7)
    np.testing.assert_allclose(z_loss(jnp.asarray(logits)), z2.mean(), rtol=1e-5)
    np.testing.assert_allclose(z_loss(jnp.asarray(logits), jnp.asarray(mask)), z2[mask].mean(), rtol=1e-5)
    # log Z = 0 (logits already log-probabilities) gives 0: the penalty only moves the normaliser
    logp = logits - logsumexp(logits, axis=-1, keepdims=True)
    assert float(z_loss(jnp.asarray(logp))) == pytest.approx(0.0, abs=1e-8)


def test_z_loss_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"z_loss: mask has shape \(3,\), expected \(5, 7\)"):
        z_loss(jnp.zeros((5, 7, 11)), jnp.ones((3,), bool))
    with pytest.raises(ValueError, match="z_loss: logits must have a class axis"):
        z_loss(jnp.float32(1.0))
