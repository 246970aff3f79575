"""Figures of attributions over image patches, and of what register tokens do.

Reading order: `attribution_maps` (several attribution methods side by side on the same
images, the patches that truly matter outlined: the picture behind a precision@k), then
`register_use` (patch-token norms and attention to the class token and registers;
Darcet et al. 2024).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tinytf.plots._common import as_array as _array
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import as_image as _image
from tinytf.plots._common import finish as _finish


def attribution_maps(images, scores: Mapping, grid: int, *, relevant=None, row_labels: Sequence[str] | None = None,
                     n: int = 4, title: str | None = None, panel: float = 2.3, dpi: int = 100, save=None) -> Figure:
    """Attributions over patches drawn on their images: rows = images, columns = input + one per method.

    Args:
      images: (B, S, S) or (B, S, S, C) images (B >= n).
      scores: {method: (B, grid*grid) patch scores, row-major}; each map is shown divided by
        its image's largest score (so every method uses the full colour range).
      grid: patches per side.
      relevant: optional (B, grid*grid) bool: the patches that truly matter, outlined in cyan.
      row_labels: optional label per shown image (e.g. "circle (predicted square)").
      n: how many images.

    Returns:
      Figure with one shared colour bar.
    """
    imgs = _array(images, "images")
    if imgs.ndim not in (3, 4) or imgs.shape[0] < n or imgs.shape[1] % grid:
        raise ValueError(f"images has shape {imgs.shape}: expected (B, S, S[, C]) with B >= n={n} and S divisible "
                         f"by grid={grid}")
    if not isinstance(scores, Mapping) or not scores:
        raise TypeError(f"scores must be a non-empty dict {{method: (B, P)}}, got {type(scores).__name__}")
    maps = {}
    for name, s in scores.items():
        s = _array(s, f"scores[{name!r}]")
        if s.ndim != 2 or s.shape[0] < n or s.shape[1] != grid * grid:
            raise ValueError(f"scores[{name!r}] has shape {s.shape}: expected (B >= {n}, {grid * grid})")
        maps[str(name)] = s
    rel = None if relevant is None else np.asarray(relevant, bool)
    if rel is not None and (rel.ndim != 2 or rel.shape[0] < n or rel.shape[1] != grid * grid):
        raise ValueError(f"relevant has shape {rel.shape}: expected (B >= {n}, {grid * grid}) bool")
    if row_labels is not None and len(row_labels) < n:
        raise ValueError(f"row_labels has {len(row_labels)} entries: expected at least n={n}")
    S = imgs.shape[1]
    cell = S / grid
    fig = _figure(panel * (len(maps) + 1) + 1.0, panel * n + 0.6, dpi)
    axes = fig.subplots(n, len(maps) + 1, squeeze=False)
    shown = None
    for i in range(n):
        img, cmap_img = _image(imgs[i])
        for j, name in enumerate(["input"] + list(maps)):
            ax = axes[i, j]
            ax.imshow(img, cmap=cmap_img, extent=(0, S, S, 0))
            if name != "input":
                s = maps[name][i]
                top = s.max() if s.max() > 0 else 1.0
                shown = ax.imshow((s / top).reshape(grid, grid), cmap="inferno", alpha=0.7, vmin=0, vmax=1,
                                  extent=(0, S, S, 0), interpolation="nearest")
            for q in np.flatnonzero(rel[i]) if rel is not None else ():  # the ground truth
                r, c = divmod(int(q), grid)
                ax.add_patch(Rectangle((c * cell + 0.3, r * cell + 0.3), cell - 0.6, cell - 0.6, fill=False,
                                       edgecolor="cyan", lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=9)
    fig.colorbar(shown, ax=axes, label="score / largest score in the image", shrink=0.5)
    fig.suptitle(title or "Which patches does each attribution point at?"
                 + (" (cyan: the patches that matter)" if rel is not None else ""))
    return _finish(fig, save)


def register_use(norms: Mapping, attention: Mapping, *, uniform: float | None = None, factor: float = 2.0,
                 title: str | None = None, dpi: int = 100, save=None) -> Figure:
    """Patch-token norms (histogram, log count) beside attention masses (grouped bars).

    Args:
      norms: {model: token norms (any shape)}, drawn as norm / that model's median.
      attention: {series (e.g. "model, layer 0"): {bar label: attention mass}}; every
        series has the same bar labels.
      uniform: draws the uniform share of the registers as a dashed line.
      factor: the outlier line (in multiples of the median norm).

    Returns:
      Figure with two panels; legends above the bars, outside the histogram's curves' way.
    """
    if not isinstance(norms, Mapping) or not norms or not isinstance(attention, Mapping) or not attention:
        raise TypeError("norms and attention must be non-empty dicts")
    labels = [list(v) for v in attention.values()]
    if any(lab != labels[0] for lab in labels):
        raise ValueError(f"attention series have different bar labels {labels}: expected the same in every series")
    fig = _figure(12.0, 4.6, dpi)
    ax_h, ax_b = fig.subplots(1, 2, width_ratios=(1, 1.4))
    for name, v in norms.items():
        v = _array(v, f"norms[{name!r}]").ravel()
        ax_h.hist(v / np.median(v), bins=40, range=(0, 3), histtype="step", lw=1.5, label=str(name))
    ax_h.axvline(factor, color="grey", ls="--", lw=1, label=f"{factor:g}x median (outlier line)")
    ax_h.set_yscale("log")
    ax_h.set_xlabel("token norm / median (last block output)")
    ax_h.set_ylabel("number of tokens")
    ax_h.set_title("Token norms (Darcet et al.'s outliers: far right)")
    ax_h.legend(fontsize=8, loc="upper right")
    xs, width = np.arange(len(labels[0])), 0.8 / len(attention)
    for i, (series, values) in enumerate(attention.items()):
        bars = ax_b.bar(xs + (i - (len(attention) - 1) / 2) * width, list(values.values()), width, label=str(series),
                        hatch="//" if i % 2 else None)
        ax_b.bar_label(bars, fmt="%.2f", fontsize=7)
    if uniform is not None:
        ax_b.axhline(uniform, color="grey", ls="--", lw=1, label=f"uniform share of the registers ({uniform:.2f})")
    ax_b.set_xticks(xs, labels[0])
    ax_b.set_ylabel("attention mass (head mean)")
    top = max(max(v.values()) for v in attention.values())
    ax_b.set_ylim(0, 1.5 * max(top, uniform or 0.0, 1e-3))
    ax_b.set_title("Attention to the class token and to the registers")
    ax_b.legend(fontsize=7, ncol=2, loc="upper left")
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


__all__ = ["attribution_maps", "register_use"]
