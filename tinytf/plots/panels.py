"""Panels the lessons share: sweeps of a parameter, query rows, annotated heatmaps, bars.

Reading order: `sweep_panels` (several metrics against one swept parameter, one
panel each), `query_rows` (where one query looks, one row per example, the right key
marked), `annotated_heatmap` (a small matrix with its values written in) and
`heatmap_panels` (several side by side), `grouped_bars`
(one bar per condition and group), `layer_similarity` (a heatmap and bars),
`run_curves` (several training runs' curves, all seeds drawn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from tinytf.plots._common import PALETTE as _PALETTE
from tinytf.plots._common import as_array as _array
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import finish as _finish

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _legend_below(fig: Figure, axes, ncols: int = 4) -> None:
    """One legend for the whole figure, below the panels (it never covers a curve)."""
    handles, labels, seen = [], [], set()
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in seen:
                seen.add(label)
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(labels)), fontsize=8)


def sweep_panels(x, panels: Mapping[str, Mapping[str, object]], *, xlabel: str, ylabels: Mapping[str, str] | None = None,
                 log_x: int | None = None, log_y: Sequence[str] = (), hlines: Mapping[str, tuple[float, str]] | None = None,
                 bands: Mapping[str, Mapping[str, tuple]] | None = None, title: str | None = None, panel=(4.0, 3.2),
                 dpi: int = 100, save=None) -> Figure:
    """Several metrics against one swept parameter: one panel per metric, one line per series.

    Args:
      x: (K,) values of the swept parameter (e.g. head dimensions).
      panels: {panel title: {series label: (K,) values}}; the same series labels in
        every panel get the same colour and marker.
      xlabel: label of x. ylabels: {panel title: y label} (default: the title).
      log_x: base of a log x axis (2 or 10), None for linear. log_y: panel titles with a log y axis.
      hlines: {panel title: (y, label)}: a dashed reference line (e.g. uniform entropy).
      bands: {panel title: {series label: ((K,) low, (K,) high)}}: a shaded spread (e.g.
        min..max over >= 2 seeds; say n in the title).
      title: the figure's title.

    Returns:
      Figure; one legend below the panels.
    """
    xs = _array(x, "x")
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"x has shape {xs.shape}: expected a non-empty 1-D sequence")
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"panels must be a non-empty dict {{title: {{label: values}}}}, got {type(panels).__name__}")
    fig = _figure(panel[0] * len(panels), panel[1] + 0.6, dpi)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    colours: dict[str, int] = {}
    for ax, (name, series) in zip(axes, panels.items()):
        for label, values in series.items():
            y = _array(values, f"panels[{name!r}][{label!r}]")
            if y.shape != xs.shape:
                raise ValueError(f"panels[{name!r}][{label!r}] has shape {y.shape}: expected {xs.shape} to match x")
            i = colours.setdefault(label, len(colours))
            ax.plot(xs, y, marker=_MARKERS[i % len(_MARKERS)], ms=4, color=_PALETTE[i % 10], label=label)
            if bands and label in bands.get(name, {}):
                low, high = (_array(v, f"bands[{name!r}][{label!r}]") for v in bands[name][label])
                if low.shape != xs.shape or high.shape != xs.shape:
                    raise ValueError(f"bands[{name!r}][{label!r}] has shapes {low.shape}, {high.shape}: expected "
                                     f"{xs.shape} to match x")
                ax.fill_between(xs, low, high, color=_PALETTE[i % 10], alpha=0.2)
        if log_x:
            ax.set_xscale("log", base=log_x)
        _dress_panel(ax, name, hlines, "--", log_y, xlabel + (" (log scale)" if log_x else ""), ylabels)
    return _close_panels(fig, axes, title, save)


def _dress_panel(ax, name, hlines, hline_style, log_y, xlabel, ylabels) -> None:
    """A panel's reference line, y scale, labels, title and grid (shared by the panel figures)."""
    if hlines and name in hlines:
        ax.axhline(hlines[name][0], color="grey", ls=hline_style, lw=1, label=hlines[name][1])
    if name in log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel((ylabels or {}).get(name, name))
    ax.set_title(name, fontsize=10)
    ax.grid(alpha=0.3)


def _close_panels(fig, axes, title, save) -> Figure:
    _legend_below(fig, axes)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def query_rows(rows, marked=None, *, key_labels: Sequence[str] | None = None, marked_label: str = "target key",
               xlabel: str = "key attended to", ylabel: str = "example", title: str | None = None,
               size=(6.4, 5.0), dpi: int = 100, save=None) -> Figure:
    """Where one query looks, one row per example, with the key it should find marked.

    Args:
      rows: (n, S) attention weights of one query row per example (e.g. the query
        token of associative recall, Ba et al. 2016).
      marked: optional (n,) ints: the key each row should attend to (a red square).
      key_labels: S labels for the keys.

    Returns:
      Figure with a colour bar (attention weight).
    """
    w = _array(rows, "rows")
    if w.ndim != 2:
        raise ValueError(f"rows has shape {w.shape}: expected (examples, keys)")
    n, S = w.shape
    fig = _figure(*size, dpi)
    ax = fig.add_subplot()
    shown = ax.imshow(w, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if marked is not None:
        idx = np.asarray(marked)
        if idx.shape != (n,) or idx.min() < 0 or idx.max() >= S:
            raise ValueError(f"marked must be {n} ints in [0, {S}), got shape {idx.shape}")
        ax.scatter(idx, np.arange(n), marker="s", s=120, facecolors="none", edgecolors="red", lw=1.5,
                   label=marked_label)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8)
    if key_labels is not None:
        if len(key_labels) != S:
            raise ValueError(f"key_labels has {len(key_labels)} entries: expected {S} (one per key)")
        ax.set_xticks(range(S), key_labels, rotation=45, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title or "Where the query looks (one row per example)")
    fig.colorbar(shown, ax=ax, label="attention weight")
    return _finish(fig, save)


def annotated_heatmap(matrix, *, xlabels: Sequence[str] | None = None, ylabels: Sequence[str] | None = None,
                      title: str = "", label: str = "value", cmap: str = "viridis", vmax: float | None = 1.0,
                      fmt: str = "{:.2f}", ax=None, size=(6.4, 3.0), dpi: int = 100, save=None) -> Figure:
    """A small matrix as a heatmap with each value written in its cell (text colour by luminance).

    Args:
      matrix: (R, C) values (e.g. per-layer x per-head scores).
      xlabels / ylabels: C column and R row labels. vmax: top of the colour scale
        (None: the matrix's max). fmt: format of the written values.
      ax: draw into this Axes of an existing figure instead of a new figure.

    Returns:
      The Figure (the new one, or ax's).
    """
    m = _array(matrix, "matrix")
    if m.ndim != 2:
        raise ValueError(f"matrix has shape {m.shape}: expected (rows, columns)")
    for labels, n, which in ((xlabels, m.shape[1], "xlabels"), (ylabels, m.shape[0], "ylabels")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{which} has {len(labels)} entries: expected {n}")
    fig = ax.figure if ax is not None else _figure(*size, dpi)
    ax = ax if ax is not None else fig.add_subplot()
    shown = ax.imshow(m, cmap=cmap, vmin=0, vmax=float(m.max()) if vmax is None else vmax)
    for (r, c), v in np.ndenumerate(m):
        red, green, blue, _ = shown.cmap(shown.norm(v))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # luminance of the cell
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(m.shape[1]), xlabels if xlabels is not None else range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]), ylabels if ylabels is not None else range(m.shape[0]))
    ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=ax, shrink=0.8, label=label)
    return _finish(fig, save)


def heatmap_panels(panels: Mapping[str, object], *, xlabels: Sequence[str] | None = None,
                   ylabels: Sequence[str] | None = None, title: str | None = None, label: str = "value",
                   cmap: str = "viridis", vmax: float | None = 1.0, fmt: str = "{:.2f}", panel=(4.5, 3.6),
                   dpi: int = 100, save=None) -> Figure:
    """`annotated_heatmap`s side by side, one per {title: (R, C) matrix} (e.g. per-head scores)."""
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"panels must be a non-empty dict {{title: matrix}}, got {type(panels).__name__}")
    fig = _figure(panel[0] * len(panels), panel[1], dpi)
    for ax, (name, matrix) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items()):
        annotated_heatmap(matrix, xlabels=xlabels, ylabels=ylabels, title=name, label=label, cmap=cmap, vmax=vmax,
                          fmt=fmt, ax=ax)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def grouped_bars(groups: Sequence[str], bars: Mapping[str, object], *, ylabel: str, xlabel: str = "",
                 hlines: Sequence[tuple[float, str]] = (), ylim=None, title: str | None = None, ax=None,
                 size=(7.0, 5.0), dpi: int = 100, save=None) -> Figure:
    """One bar per (group, condition): e.g. accuracy per position scheme, as trained and shifted.

    Args:
      groups: G group names (x axis). bars: {condition: (G,) values}, drawn side by side.
      hlines: [(y, label)] dashed/dotted reference lines (chance levels).
      ax: draw into this Axes of an existing figure.

    Returns:
      The Figure; the legend sits below the axes.
    """
    if not isinstance(bars, Mapping) or not bars:
        raise TypeError(f"bars must be a non-empty dict {{condition: values}}, got {type(bars).__name__}")
    x = np.arange(len(groups))
    fig = ax.figure if ax is not None else _figure(*size, dpi)
    ax = ax if ax is not None else fig.add_subplot()
    width = 0.8 / len(bars)
    for i, (name, values) in enumerate(bars.items()):
        v = _array(values, f"bars[{name!r}]")
        if v.shape != (len(groups),):
            raise ValueError(f"bars[{name!r}] has shape {v.shape}: expected ({len(groups)},), one per group")
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, v, width, label=name, color=_PALETTE[i % 10])
    for j, (y, label) in enumerate(hlines):
        ax.axhline(y, color="black" if j == 0 else "grey", ls="--" if j == 0 else ":", lw=1, label=label)
    ax.set_xticks(x, groups, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return _finish(fig, save)


def layer_similarity(js, same_input, other_input, *, title: str | None = None, dpi: int = 100, save=None) -> Figure:
    """Cross-layer JS divergence (heatmap) and adjacent layers on the same vs another input (bars).

    Args:
      js: (L, L) JS divergence between layers' head-averaged maps
        (`tinytf.diagnostics.cross_layer_similarity(...)["js"]`).
      same_input, other_input: (L-1,) adjacent-layer JS on the same input and against the
        next layer's map of another input (`tinytf.diagnostics.adjacent_layer_js`).

    Returns:
      Figure.
    """
    m = _array(js, "js")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"js has shape {m.shape}: expected a square (L, L) matrix with L >= 2 layers")
    L = m.shape[0]
    fig = _figure(10.0, 4.2, dpi)
    ax, bx = fig.subplots(1, 2)
    ticks = [f"layer {i}" for i in range(L)]
    annotated_heatmap(m, xlabels=ticks, ylabels=ticks, cmap="viridis_r", vmax=None, fmt="{:.3f}", ax=ax,
                      title="JS divergence between layers' head-averaged maps",
                      label="JS (nats; 0 = same, ln 2 = disjoint)")
    grouped_bars([f"L{i} vs L{i + 1}" for i in range(L - 1)],
                 {"same input": same_input, "next layer on another input": other_input},
                 ylabel="JS divergence (nats)", title="Adjacent layers: same input vs another input", ax=bx)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def run_curves(panels: Mapping[str, Mapping[str, Sequence]], *, styles: Mapping[str, Mapping] | None = None,
               xlabel: str = "training step", ylabels: Mapping[str, str] | None = None, log_y: Sequence[str] = (),
               hlines: Mapping[str, tuple[float, str]] | None = None, title: str | None = None, panel=(4.3, 3.6),
               dpi: int = 100, save=None) -> Figure:
    """Curves of several training runs, one panel per metric, one line per run (all seeds drawn).

    Args:
      panels: {panel title: {condition label: [(x, y), ...] one pair per seed}}; the first
        seed is drawn solid, the others faded.
      styles: {condition label: {"colour": int (palette index), "ls": line style}}; default:
        a new colour per label, solid.
      xlabel, ylabels ({panel title: y label}), log_y (panel titles with a log y axis),
      hlines ({panel title: (y, label)}), title: as in `sweep_panels`.

    Returns:
      Figure; one legend below the panels.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"panels must be a non-empty dict {{title: {{label: [(x, y), ...]}}}}, got "
                        f"{type(panels).__name__}")
    fig = _figure(panel[0] * len(panels), panel[1] + 0.8, dpi)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    colours: dict[str, int] = {}
    for ax, (name, series) in zip(axes, panels.items()):
        for label, seeds in series.items():
            style = (styles or {}).get(label, {})
            c = style.get("colour", colours.setdefault(label, len(colours)))
            for k, pair in enumerate(seeds):
                x, y = (_array(v, f"panels[{name!r}][{label!r}][{k}]") for v in pair)
                if x.shape != y.shape or x.ndim != 1:
                    raise ValueError(f"panels[{name!r}][{label!r}][{k}] has x {x.shape} and y {y.shape}: expected "
                                     "two 1-D arrays of the same length")
                ax.plot(x, y, color=_PALETTE[c % 10], ls=style.get("ls", "-"), lw=1.4, alpha=0.9 if k == 0 else 0.4,
                        label=label if k == 0 else None)
        _dress_panel(ax, name, hlines, ":", log_y, xlabel, ylabels)
    return _close_panels(fig, axes, title, save)


__all__ = ["run_curves", "sweep_panels", "query_rows", "annotated_heatmap", "heatmap_panels", "grouped_bars",
           "layer_similarity"]
