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


def as_image(image) -> tuple[np.ndarray, str | None]:
    """An image ready for imshow: (H, W) grey or (H, W, 3|4) colour in [0, 1], and its colour map.

    (H, W, 1) is squeezed to grey; values outside [0, 1] (uint8, standardised) are rescaled.
    """
    img = as_array(image, "image")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
        raise ValueError(f"image has shape {img.shape}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    lo, hi = img.min(), img.max()
    if lo < 0 or hi > 1:  # uint8 or standardised images: rescale for display
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img, ("gray" if img.ndim == 2 else None)
