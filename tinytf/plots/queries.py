"""Figures of the DETR query checklist: how a positional code sees the grid, what a feature map holds.

Reading order: `code_similarity_maps` (the cosine between every cell's positional code
and one reference cell: a code that resolves the grid falls off with distance, a code
that does not is nearly flat; Carion et al. 2020's 2-D sine code and its variants), then
`feature_map_rgb` (a one-hot class feature map drawn as a picture, for `detr_queries`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from tinytf.plots._common import as_array as _array
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import finish as _finish


def code_similarity_maps(codes: Mapping, grid: tuple[int, int], *, cell: tuple[int, int] | None = None,
                         title: str | None = None, panel: float = 3.6, dpi: int = 100, save=None) -> Figure:
    """Cosine between each cell's positional code and the code of one cell, for several codes.

    Math: c(i) = <p_i, p_ref> / (|p_i| |p_ref|) over the cells i of an h x w grid.

    Args:
      codes: {name: (h*w, D) row-major codes} (e.g. `tinytf.positional.sine_2d`).
      grid: (h, w).
      cell: the reference (row, column); default the centre cell (h // 2, w // 2).

    Returns:
      Figure: one heat map per code on a common 0-1 colour scale (negative cosines clip to 0).
    """
    if not isinstance(codes, Mapping) or not codes:
        raise TypeError(f"codes must be a non-empty dict {{name: (h*w, D)}}, got {type(codes).__name__}")
    h, w = (int(g) for g in grid)
    row, col = (h // 2, w // 2) if cell is None else (int(cell[0]), int(cell[1]))
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"cell={cell} is outside the {h}x{w} grid")
    fig = _figure(panel * len(codes) + 0.9, panel + 0.5, dpi)
    axes = fig.subplots(1, len(codes), squeeze=False)[0]
    shown = None
    for ax, (name, pos) in zip(axes, codes.items()):
        p = _array(pos, f"codes[{name!r}]")
        if p.ndim != 2 or p.shape[0] != h * w:
            raise ValueError(f"codes[{name!r}] has shape {p.shape}: expected ({h * w}, D) for the {h}x{w} grid")
        unit = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
        similarity = (unit @ unit[row * w + col]).reshape(h, w)  # (h, w)
        shown = ax.imshow(similarity, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.plot(col, row, marker="x", color="red", ms=8, mew=2)
        ax.set_title(str(name), fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.colorbar(shown, ax=list(axes), label=f"cosine with the code of cell ({row}, {col}) (red x)", shrink=0.85)
    fig.suptitle(title or "Can the positional code tell the cells apart?")
    return _finish(fig, save)


_CLASS_COLOURS = ((0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.3, 0.4, 1.0), (0.9, 0.8, 0.1), (0.8, 0.3, 0.9))


def feature_map_rgb(features, *, colours: Sequence | None = None, scale: int = 8) -> np.ndarray:
    """A class feature map as an RGB picture: each cell takes the colour of its strongest class.

    Args:
      features: (h, w, C + 1) per-cell class scores (one-hot plus noise), the last channel
        "background" (drawn black).
      colours: C RGB triples in [0, 1] (default red, green, blue, yellow, purple).
      scale: pixels per cell.

    Returns:
      (h * scale, w * scale, 3) float array in [0, 1].
    """
    f = _array(features, "features")
    if f.ndim != 3 or f.shape[-1] < 2:
        raise ValueError(f"features has shape {f.shape}: expected (h, w, C + 1) with at least one class")
    classes = f.shape[-1] - 1
    colours = _CLASS_COLOURS if colours is None else colours
    if len(colours) < classes:
        raise ValueError(f"colours has {len(colours)} entries for {classes} classes: expected one per class")
    palette = np.concatenate([np.asarray(colours[:classes], np.float64).reshape(classes, 3), np.zeros((1, 3))])
    rgb = palette[f.argmax(-1)]  # (h, w, 3)
    return np.repeat(np.repeat(rgb, scale, 0), scale, 1)


__all__ = ["code_similarity_maps", "feature_map_rgb"]
