"""Shared test setup: CPU, the compilation cache, and strict rank promotion."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from tinytf.config import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.fixture
def strict_rank():
    """Make silent broadcasting between arrays of different rank an error."""
    with jax.numpy_rank_promotion("raise"):
        yield
