"""Shared helpers for the figures: a pyplot-free Figure, saving, input checks."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

PALETTE = matplotlib.colormaps["tab10"].colors


def figure(width: float, height: float, dpi: int) -> Figure:
    """A new Figure (width x height inches) with constrained layout, not registered with pyplot."""
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def finish(fig: Figure, save) -> Figure:
    """Write the figure to `save` (PNG, exact figsize * dpi pixels) and return it."""
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi)
    return fig


def as_array(x, name: str) -> np.ndarray:
    """x as a float64 array, or a TypeError naming the argument."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__}") from None
