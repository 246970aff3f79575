"""A real image set with no download: scikit-learn's 1,797 handwritten 8x8 digits.

scikit-learn ships the UCI optical-digits test set inside its wheel (Alpaydin & Kaynak 1998),
so the ViT lessons can show a real dataset offline. scikit-learn is an optional extra:
``pip install tinytf[data]``. Also here: ``sample_batch``, which draws a random minibatch
from arrays held on the device (jittable), so a fixed dataset can feed a ``lax.scan``
training loop the same way the synthetic generators do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.checks import check_int, check_key


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Load scikit-learn's 8x8 digits, scaled to [0, 1], with a deterministic stratified split.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` and its first
    ``round(test_fraction * n_class)`` images go to the test set, so both sets keep the
    class balance and the same seed always gives the same split.

    Args:
      test_fraction: share of each class held out, in (0, 1).
      seed: seed of the split.

    Returns:
      ``(train, test)``, each a dict of numpy arrays ``images (N, 8, 8, 1) float32`` in
      [0, 1] (the raw 0..16 intensities / 16) and ``labels (N,) int32`` in [0, 10); the two
      N add up to 1,797.

    Raises:
      ImportError: scikit-learn is not installed (``pip install tinytf[data]``).
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    seed = check_int("seed", seed, low=0)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:  # the optional extra is missing
        raise ImportError(
            "tinytf.data.load_digits needs scikit-learn, which ships the digits inside its package: "
            "install the optional extra with `pip install tinytf[data]` (or `pip install scikit-learn`)"
        ) from err

    bunch = sklearn_load_digits()
    images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1)
    labels = np.asarray(bunch.target, np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):  # stratified: the same share of every class
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
    return (
        {"images": images[train_idx], "labels": labels[train_idx]},
        {"images": images[test_idx], "labels": labels[test_idx]},
    )


def sample_batch(key, data: dict, *, batch_size: int) -> dict[str, jax.Array]:
    """Draw a random minibatch (with replacement) from a dict of equally long arrays.

    Jittable: close over ``data`` (its arrays become device constants) or pass it as an
    argument, e.g. ``jax.jit(functools.partial(sample_batch, data=train, batch_size=64))``.

    Args:
      key: a JAX random key.
      data: dict of arrays sharing their first dimension N.
      batch_size: B.

    Returns:
      dict with the same keys, each array indexed by the same B random rows.
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    lengths = {name: np.shape(a)[0] for name, a in data.items()}
    if not lengths or len(set(lengths.values())) != 1:
        raise ValueError(f"data must be a non-empty dict of arrays with one shared first dimension, got {lengths}")
    n = next(iter(lengths.values()))
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {name: jnp.asarray(a)[idx] for name, a in data.items()}
