"""Attention maps as pictures: a heads x layers grid, a map on an image, DETR's queries.

Reading order: `attention_grid` (token-level maps of every head and layer), then
`attention_on_image` (one map over the image it looks at: ViT patches, DETR's
8x8 feature grid) and `detr_queries` (predicted boxes and each object query's
cross-attention map side by side; Carion et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tinytf.plots._common import PALETTE as _PALETTE
from tinytf.plots._common import as_array as _array
from tinytf.plots._common import as_image as _image
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import finish as _finish


# --------------------------------------------------------------------------- 1. attention grid


def _grid_maps(maps, example: int) -> list[tuple[str, np.ndarray]]:
    """-> [(layer name, (N, T, S))] from a dict of (B,N,T,S)/(N,T,S) or an (L,N,T,S) array."""
    if isinstance(maps, Mapping):
        items = list(maps.items())
        if not items:
            raise ValueError("maps is empty: expected at least one layer")
    else:
        arr = _array(maps, "maps")
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ValueError(f"maps has shape {arr.shape}: expected (L, N, T, S), (N, T, S) or a dict {{layer: (B, N, T, S)}}")
        items = [(f"layer {i}", arr[i]) for i in range(arr.shape[0])]
        example = None
    out = []
    for name, m in items:
        m = _array(m, f"maps[{name!r}]")
        if m.ndim == 4 and example is not None:
            if not 0 <= example < m.shape[0]:
                raise ValueError(f"example={example} is out of range for maps[{name!r}] with batch {m.shape[0]}")
            m = m[example]
        if m.ndim != 3:
            raise ValueError(f"maps[{name!r}] has shape {m.shape}: expected (B, N, T, S) or (N, T, S)")
        out.append((str(name), m))
    return out


def _tick_labels(ax, axis: str, labels, n: int, max_labels: int):
    ticks = np.arange(n)
    if labels is not None and n <= max_labels:
        getattr(ax, f"set_{axis}ticks")(ticks, [str(t) for t in labels], fontsize=7,
                                        rotation=90 if axis == "x" else 0)
    else:
        step = max(1, math.ceil(n / 8))
        getattr(ax, f"set_{axis}ticks")(ticks[::step], [str(t) for t in ticks[::step]], fontsize=7)


def attention_grid(maps, tokens: Sequence[str] | None = None, *, query_tokens: Sequence[str] | None = None,
                   key_tokens: Sequence[str] | None = None, example: int = 0, title: str | None = None,
                   cmap: str = "viridis", cell: float | None = None, max_labels: int = 40, dpi: int = 100,
                   save=None) -> Figure:
    """Heads x layers grid of attention heatmaps (rows = heads, columns = layers).

    Args:
      maps: {layer: (B, N, T, S)} (from `capture_attention`), or an array
        (L, N, T, S) / (N, T, S) for one example.
      tokens: labels of the T = S positions of self-attention maps.
      query_tokens / key_tokens: labels for queries (rows) / keys (columns)
        when they differ (cross-attention); override `tokens`.
      example: which batch element to draw from (B, N, T, S) maps.
      cell: inches per heatmap (default: room for one readable label per
        token, 1.8 to 4 inches). max_labels: longer sequences get index ticks.

    Returns:
      Figure; one shared colour bar (attention weight).
    """
    layers = _grid_maps(maps, example)
    q_labels = query_tokens if query_tokens is not None else tokens
    k_labels = key_tokens if key_tokens is not None else tokens
    for name, m in layers:
        _, T, S = m.shape
        for labels, n, which in ((q_labels, T, "queries"), (k_labels, S, "keys")):
            if labels is not None and len(labels) != n:
                arg = "tokens" if (which == "queries" and query_tokens is None) or (which == "keys" and key_tokens is None) \
                    else ("query_tokens" if which == "queries" else "key_tokens")
                raise ValueError(f"{arg} has {len(labels)} entries but layer {name!r} has {n} {which} "
                                 f"(map {m.shape[1:]} = (T, S)); pass query_tokens=/key_tokens= for cross-attention")
    n_heads = max(m.shape[0] for _, m in layers)
    n_layers = len(layers)
    vmax = max(float(m.max()) for _, m in layers) or 1.0
    if cell is None:
        longest = max(max(m.shape[1:]) for _, m in layers)
        labelled = (q_labels is not None or k_labels is not None) and longest <= max_labels
        cell = float(np.clip((0.12 if labelled else 0.06) * longest, 1.8, 4.0))
    fig = _figure(n_layers * cell + 1.3, n_heads * cell + 0.9, dpi)
    axes = fig.subplots(n_heads, n_layers, squeeze=False)
    image = None
    for c, (name, m) in enumerate(layers):
        for r in range(n_heads):
            ax = axes[r, c]
            if r >= m.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(m[r], cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
            _tick_labels(ax, "y", q_labels if c == 0 else None, m.shape[1], max_labels)
            _tick_labels(ax, "x", k_labels if r == n_heads - 1 else None, m.shape[2], max_labels)
            if c > 0:
                ax.set_yticklabels([])
            if r < n_heads - 1:
                ax.set_xticklabels([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"head {r}\nquery", fontsize=8)
            if r == n_heads - 1:
                ax.set_xlabel("key", fontsize=8)
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    fig.suptitle(title or f"Attention maps (example {example}): rows = heads, columns = layers")
    return _finish(fig, save)


# --------------------------------------------------------------------------- 2. maps on images


def _map_grid(amap, image_shape, grid, name: str = "attn_map") -> np.ndarray:
    """(h, w) or (P,) -> (h, w), checking that the grid tiles the image."""
    a = _array(amap, name)
    if a.ndim == 1:
        if grid is None:
            side = math.isqrt(a.size)
            if side * side != a.size:
                raise ValueError(f"{name} has {a.size} entries, not a square number: pass grid=(h, w)")
            grid = (side, side)
        if grid[0] * grid[1] != a.size:
            raise ValueError(f"{name} has {a.size} entries but grid={tuple(grid)} has {grid[0] * grid[1]} cells")
        a = a.reshape(grid)
    if a.ndim != 2:
        raise ValueError(f"{name} has shape {a.shape}: expected (h, w) or (P,)")
    H, W = image_shape[:2]
    if H % a.shape[0] or W % a.shape[1]:
        raise ValueError(f"{name} grid {a.shape[0]}x{a.shape[1]} does not tile the {H}x{W} image: "
                         f"expected a grid whose sides divide the image sides (e.g. {H // 8}x{W // 8} cells of 8x8 pixels)")
    return a


def _overlay(ax, img, cmap_img, amap, *, alpha, cmap, vmax, grid_lines=True):
    """Image, then the map stretched over it, then (clean synthetic images) the objects' outlines on top."""
    H, W = img.shape[:2]
    ax.imshow(img, cmap=cmap_img, extent=(0, W, H, 0), interpolation="nearest")
    shown = ax.imshow(amap, cmap=cmap, alpha=alpha, extent=(0, W, H, 0), interpolation="nearest", vmin=0.0, vmax=vmax)
    grey = img if img.ndim == 2 else img[..., :3].mean(-1)
    if 1 < np.unique(grey).size <= 16:  # a few flat colours (toy shapes): outline them; noisy images: don't
        centres_x, centres_y = np.arange(W) + 0.5, np.arange(H) + 0.5
        ax.contour(centres_x, centres_y, (grey > grey.min()).astype(float), levels=[0.5], colors="cyan",
                   linewidths=0.8)
    if grid_lines:
        h, w = amap.shape
        for y in np.arange(1, h) * H / h:
            ax.axhline(y, color="white", lw=0.3, alpha=0.4)
        for x in np.arange(1, w) * W / w:
            ax.axvline(x, color="white", lw=0.3, alpha=0.4)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    return shown


def attention_on_image(image, attn_map, *, grid: tuple[int, int] | None = None, alpha: float = 0.6,
                       cmap: str = "inferno", title: str | None = None, size: float = 3.6, dpi: int = 100,
                       save=None) -> Figure:
    """An attention map over the image it looks at: input | overlay, with a colour bar.

    Args:
      image: (H, W) or (H, W, 3) image.
      attn_map: (h, w) map over patches / feature cells, or (P,) flattened
        row-major (P = h * w; square unless `grid` is given). h and w must
        divide H and W (e.g. 8x8 patches of a 64x64 image, DETR's 8x8 grid).
      grid: (h, w) for a flattened non-square map.

    Returns:
      Figure with two panels.
    """
    img, cmap_img = _image(image)
    amap = _map_grid(attn_map, img.shape, grid)
    fig = _figure(2 * size + 0.8, size + 0.5, dpi)
    ax_img, ax_map = fig.subplots(1, 2)
    ax_img.imshow(img, cmap=cmap_img, interpolation="nearest")
    ax_img.set_title("input")
    shown = _overlay(ax_map, img, cmap_img, amap, alpha=alpha, cmap=cmap, vmax=float(amap.max()) or 1.0)
    ax_map.set_title(f"attention ({amap.shape[0]}x{amap.shape[1]} cells)")
    for ax in (ax_img, ax_map):
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.colorbar(shown, ax=ax_map, label="attention weight", shrink=0.85)
    fig.suptitle(title or "Where the query looks")
    return _finish(fig, save)


def _boxes_xyxy(boxes, fmt: str, normalized: bool, H: int, W: int) -> np.ndarray:
    b = _array(boxes, "boxes")
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes has shape {b.shape}: expected (Q, 4)")
    if fmt == "cxcywh":
        b = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], -1)
    elif fmt != "xyxy":
        raise ValueError(f"box_format={fmt!r}: expected 'cxcywh' or 'xyxy'")
    return b * np.array([W, H, W, H]) if normalized else b


def detr_queries(image, query_maps, boxes, labels, scores, *, box_format: str = "cxcywh", normalized: bool = True,
                 class_names=None, score_threshold: float | None = None, grid: tuple[int, int] | None = None,
                 max_cols: int = 4, alpha: float = 0.75, cmap: str = "inferno", shared_scale: bool = False,
                 title: str | None = None,
                 panel: float = 1.9, dpi: int = 100, save=None) -> Figure:
    """DETR at a glance: the image with every query's box, and each query's cross-attention map.

    Args:
      image: (H, W) or (H, W, 3).
      query_maps: (Q, h, w) or (Q, P) head-averaged last-layer cross-attention.
      boxes: (Q, 4) predicted boxes, `box_format` "cxcywh" (DETR) or "xyxy",
        in [0, 1] if `normalized` else in pixels.
      labels: (Q,) predicted class ids. scores: (Q,) their probabilities.
      class_names: optional list/dict id -> name.
      score_threshold: queries below it get no box and a grey dashed frame.
      shared_scale: one colour scale for all queries (default: each map scaled
        to its own maximum, so weak maps stay visible).

    Returns:
      Figure: big image panel (left) and one small panel per query (right),
      matched by colour and the "q<i>" tag.
    """
    img, cmap_img = _image(image)
    H, W = img.shape[:2]
    maps = _array(query_maps, "query_maps")
    if maps.ndim not in (2, 3):
        raise ValueError(f"query_maps has shape {maps.shape}: expected (Q, h, w) or (Q, P)")
    Q = maps.shape[0]
    labels = np.asarray(labels).reshape(-1)
    scores_arr = _array(scores, "scores").reshape(-1)
    xyxy = _boxes_xyxy(boxes, box_format, normalized, H, W)
    for name, n in (("boxes", xyxy.shape[0]), ("labels", labels.size), ("scores", scores_arr.size)):
        if n != Q:
            raise ValueError(f"{name} has {n} entries but query_maps has {Q} queries: expected one per query")
    grids = [_map_grid(m, img.shape, grid, f"query_maps[{q}]") for q, m in enumerate(maps)]
    ncols = min(Q, max_cols)
    nrows = math.ceil(Q / ncols)
    big = max(2 * panel, nrows * panel)
    fig = _figure(big + ncols * panel + 1.0, max(big, nrows * panel) + 0.6, dpi)
    spec = fig.add_gridspec(nrows, ncols + 2, width_ratios=[big / 2, big / 2] + [panel] * ncols)
    ax_img = fig.add_subplot(spec[:, :2])
    ax_img.imshow(img, cmap=cmap_img, extent=(0, W, H, 0), interpolation="nearest")

    def name_of(label):
        if class_names is None:
            return str(label)
        try:
            return str(class_names[int(label)])
        except (KeyError, IndexError):
            return str(label)

    if shared_scale:
        vmax, bar_label = max(float(g.max()) for g in grids) or 1.0, "cross-attention weight"
    else:  # each query's map on its own scale, as in the DETR paper's figures
        grids = [g / g.max() if g.max() > 0 else g for g in grids]
        vmax, bar_label = 1.0, "cross-attention / that query's max"
    shown = None
    for q in range(Q):
        colour = _PALETTE[q % 10]
        kept = score_threshold is None or scores_arr[q] >= score_threshold
        tag = f"q{q}: {name_of(labels[q])} {scores_arr[q]:.2f}"
        if kept:
            x0, y0, x1, y1 = xyxy[q]
            ax_img.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=2))
            ax_img.text(x0, y0, tag, color="white", fontsize=7, va="bottom",
                        bbox=dict(facecolor=colour, alpha=0.8, pad=1, lw=0))
        ax = fig.add_subplot(spec[q // ncols, 2 + q % ncols])
        shown = _overlay(ax, img, cmap_img, grids[q], alpha=alpha, cmap=cmap, vmax=vmax, grid_lines=False)
        if kept:  # the query's own box, to compare where it looks with what it predicts
            x0, y0, x1, y1 = xyxy[q]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.2, ls="--"))
        ax.set_title(tag if kept else f"{tag} (< {score_threshold:g})", fontsize=8, color=colour if kept else "grey")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour if kept else "grey")
            spine.set_linewidth(2)
            spine.set_linestyle("-" if kept else "--")
    ax_img.set_xlim(0, W)
    ax_img.set_ylim(H, 0)
    ax_img.set_title("predictions (box colour = query)")
    ax_img.set_xlabel("x (pixels)")
    ax_img.set_ylabel("y (pixels)")
    fig.colorbar(shown, ax=fig.axes[1:], label=bar_label, shrink=0.8)
    fig.suptitle(title or f"DETR object queries: boxes and cross-attention maps ({Q} queries)")
    return _finish(fig, save)
