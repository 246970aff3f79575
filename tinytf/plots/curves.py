"""Curves: metrics over training, over sequence length, over pruning, deletion and depth.

Each takes x values and a dict {name: values}; values of shape (runs, K) are
drawn as a mean line with a min-max band. Reading order: `metric_curves`,
`length_curves`, `pruning_curves`, `deletion_curves`, `rank_vs_depth`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tinytf.plots._common import PALETTE as _PALETTE
from tinytf.plots._common import as_array as _array
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import finish as _finish


def _series(xs, curves: Mapping, xname: str) -> tuple[np.ndarray, dict]:
    """Check curves {name: (K,) or (runs, K)} against xs (K,); return x and {name: (runs, K)}."""
    x = _array(xs, xname)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{xname} has shape {x.shape}: expected a non-empty 1-D sequence")
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty dict {{name: values}}, got {type(curves).__name__}")
    out = {}
    for name, values in curves.items():
        v = _array(values, f"curves[{name!r}]")
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.shape[1] != x.size:
            raise ValueError(f"curves[{name!r}] has shape {np.shape(values)}: expected ({x.size},) or "
                             f"(runs, {x.size}) to match {xname} of length {x.size}")
        out[str(name)] = v
    return x, out


LEGEND_PLACES = ("inside", "outside")
"""Where the curve plots put their legend: matplotlib's best spot inside the axes, or to their right."""

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")


def _style(i: int) -> dict:
    """Colour, marker and line style of curve i: curves that coincide stay distinguishable."""
    return dict(color=_PALETTE[i % 10], marker=_MARKERS[i % len(_MARKERS)], ls=_LINES[i % len(_LINES)])


def _plot_band(ax, x, runs: np.ndarray, i: int, label: str):
    """Mean line, and a min-max band when there are several runs."""
    mean = runs.mean(0)
    style = _style(i)
    colour = style["color"]
    ax.plot(x, mean, ms=5, mfc="none", label=label, **style)
    if runs.shape[0] > 1:
        ax.fill_between(x, runs.min(0), runs.max(0), color=colour, alpha=0.2, lw=0)


def _simple_curves(xs, curves, *, xname, xlabel, ylabel, title, legend_stat=None, log_x=False, log_y=False,
                   hline=None, hline_label=None, vline=None, vline_label=None, size=(6.0, 4.0), dpi=100,
                   legend="inside"):
    x, runs = _series(xs, curves, xname)
    if legend not in LEGEND_PLACES:
        raise ValueError(f"legend must be one of {LEGEND_PLACES}, got {legend!r}")
    if legend == "outside":  # room on the right for the legend, the axes keep their size
        size = (size[0] + 2.6, size[1])
    fig = _figure(*size, dpi)
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(runs.items()):
        label = name if legend_stat is None else f"{name} ({legend_stat[0]} {legend_stat[1](x, v.mean(0)):.3f})"
        if v.shape[0] > 1:
            label += f", mean of {v.shape[0]}"
        _plot_band(ax, x, v, i, label)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=1, label=hline_label)
    if vline is not None:
        ax.axvline(vline, color="grey", ls=":", lw=1, label=vline_label)
    if log_x:
        ax.set_xscale("log")
        if x.size <= 12 and np.all(x > 0):  # label the measured points, not powers of ten
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend == "outside":  # beside the axes: never on a curve, however many there are
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- 3. curves


def metric_curves(history, *, names: Sequence[str] | None = None, log_y=False, separate: bool = True,
                  xlabel: str = "training step", title: str | None = None, panel=(4.2, 3.2), dpi: int = 100,
                  save=None) -> Figure:
    """Metrics versus training step, one panel per metric (e.g. per-head entropy, max logit).

    Args:
      history: {name: (steps, values)} or {name: values} (steps = 0..K-1), or
        a `tinytf.train.History` (its `.series`). values: (K,) or (K, N) — one
        line per column, labelled "h0", "h1", ... (per-head metrics).
      names: metrics to draw (default all).
      log_y: True for all panels, or a collection of metric names.
      separate: one panel per metric (default) or all on one axis.

    Returns:
      Figure.
    """
    series = getattr(history, "series", history)
    if not isinstance(series, Mapping) or not series:
        raise TypeError(f"history must be a non-empty dict {{name: (steps, values)}} or a History, got {type(history).__name__}")
    names = list(series) if names is None else list(names)
    missing = [n for n in names if n not in series]
    if missing:
        raise ValueError(f"names {missing} not in history: available {list(series)}")
    data = {}
    for name in names:
        entry = series[name]
        if isinstance(entry, tuple) and len(entry) == 2:
            steps, values = _array(entry[0], f"history[{name!r}] steps"), _array(list(entry[1]), f"history[{name!r}] values")
        else:
            values = _array(entry, f"history[{name!r}]")
            steps = np.arange(values.shape[0]) if values.ndim else np.zeros(0)
        if values.ndim not in (1, 2) or steps.ndim != 1 or steps.size != values.shape[0]:
            raise ValueError(f"history[{name!r}] has {steps.size} steps and values of shape {values.shape}: "
                             f"expected values (K,) or (K, N) with K = number of steps")
        data[name] = (steps, values)
    n_panels = len(names) if separate else 1
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = _figure(panel[0] * ncols, panel[1] * nrows + 0.4, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax in axes[n_panels:]:
        ax.axis("off")
    for i, name in enumerate(names):
        steps, values = data[name]
        ax = axes[i if separate else 0]
        logged = log_y is True or (not isinstance(log_y, bool) and name in log_y)
        cols = values[:, None] if values.ndim == 1 else values
        for j in range(cols.shape[1]):
            y = np.where(cols[:, j] > 0, cols[:, j], np.nan) if logged else cols[:, j]
            label = name if cols.shape[1] == 1 else f"{name} h{j}" if not separate else f"h{j}"
            ax.plot(steps, y, color=_PALETTE[(j if separate else i * cols.shape[1] + j) % 10], label=label, lw=1.5)
        if logged:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name if separate else "value")
        ax.set_title(name if separate else ", ".join(names), fontsize=10)
        ax.grid(alpha=0.3)
        if cols.shape[1] > 1 or not separate:
            ax.legend(fontsize=7, ncols=2 if cols.shape[1] > 4 else 1)
    fig.suptitle(title or "Metrics during training")
    return _finish(fig, save)


def length_curves(lengths, curves: Mapping, *, ylabel: str = "needle attention mass", log_x: bool = True,
                  train_length: float | None = None, title: str | None = None, legend: str = "inside",
                  dpi: int = 100, save=None) -> Figure:
    """A metric versus sequence length for several variants (e.g. needle mass, softmax vs SSMax).

    Args:
      lengths: (K,) sequence lengths. curves: {variant: (K,) or (runs, K)};
        several runs are drawn as mean and min-max band.
      train_length: draws a vertical line at the longest training length.
      legend: "inside" (matplotlib's emptiest corner) or "outside" (to the right of the
        axes; use it when curves fill every corner).

    Returns:
      Figure.
    """
    fig = _simple_curves(lengths, curves, xname="lengths", xlabel="sequence length" + (" (log scale)" if log_x else ""),
                         ylabel=ylabel, title=title or f"{ylabel} vs sequence length", log_x=log_x,
                         vline=train_length, vline_label="longest training length", dpi=dpi, legend=legend)
    return _finish(fig, save)


def _auc(x, y) -> float:
    """Trapezoid area under y(x), divided by the x range (so it stays on y's scale)."""
    span = x[-1] - x[0]
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / span) if span else float(y[0])


def pruning_curves(fractions, curves: Mapping, *, ylabel: str = "accuracy", chance: float | None = None,
                   title: str | None = None, dpi: int = 100, save=None) -> Figure:
    """Accuracy versus fraction of heads pruned for several orders (Michel et al. 2019).

    Args:
      fractions: (K,) fractions of heads removed. curves: {order: (K,) or
        (runs, K)} (e.g. "importance", "reverse", "random" with several runs).
      chance: draws a dashed line at the majority/chance rate.

    Returns:
      Figure; the legend gives each curve's normalised area under the curve.
    """
    fig = _simple_curves(fractions, curves, xname="fractions", xlabel="fraction of heads pruned", ylabel=ylabel,
                         title=title or "Head pruning without retraining", legend_stat=("AUC", _auc),
                         hline=chance, hline_label="chance / majority class", dpi=dpi)
    return _finish(fig, save)


def deletion_curves(ks, curves: Mapping, *, ylabel: str = "drop in p(predicted class)", title: str | None = None,
                    dpi: int = 100, save=None) -> Figure:
    """Deletion curves: probability drop after removing the top-k tokens of each attribution.

    Args:
      ks: (K,) numbers of deleted tokens. curves: {method: (K,) or (runs, K)}
        drops from `tinytf.diagnostics.deletion_curve`.

    Returns:
      Figure; the legend gives each method's AOPC (mean drop; higher = more faithful).
    """
    fig = _simple_curves(ks, curves, xname="ks", xlabel="tokens deleted (k, most important first)", ylabel=ylabel,
                         title=title or "Faithfulness: deletion curves", legend_stat=("AOPC", lambda x, y: float(y.mean())),
                         hline=0.0, dpi=dpi)
    return _finish(fig, save)


def rank_vs_depth(depths, curves: Mapping, *, floor: float = 1e-8, ylabel: str = "relative residual r(X)",
                  title: str | None = None, dpi: int = 100, save=None) -> Figure:
    """Rank-collapse residual versus depth on a log axis (Dong et al. 2021).

    Values at or below `floor` (float32 rounding: exact zeros cannot be drawn on
    a log axis) are drawn at the floor with hollow markers, and the floor is
    shown as a dashed line.

    Args:
      depths: (K,) numbers of layers. curves: {variant: (K,) or (runs, K)}
        residuals; several runs are drawn as the mean of log10 and a min-max band.

    Returns:
      Figure.
    """
    x, runs = _series(depths, curves, "depths")
    if floor <= 0:
        raise ValueError(f"floor={floor}: expected a positive value for a log axis")
    fig = _figure(6.0, 4.0, dpi)
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(runs.items()):
        style = _style(i)
        colour = style["color"]
        clipped = np.maximum(np.nan_to_num(v, nan=floor), floor)
        centre = 10 ** np.log10(clipped).mean(0)
        ax.plot(x, centre, ms=4, label=name + (f" (mean of {v.shape[0]})" if v.shape[0] > 1 else ""), **style)
        at_floor = centre <= floor * 1.0001
        ax.plot(x[at_floor], centre[at_floor], ls="none", marker=style["marker"], ms=9, mfc="white", mec=colour)
        if v.shape[0] > 1:
            ax.fill_between(x, clipped.min(0), clipped.max(0), color=colour, alpha=0.2, lw=0)
    ax.axhline(floor, color="grey", ls="--", lw=1, label=f"numerical floor {floor:.0e} (hollow = at floor)")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, None)
    ax.set_xlabel("depth (number of layers)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Rank collapse: distance from rank 1 vs depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, save)


def condition_panels(steps, panels: Mapping, *, xlabel: str = "training step", titles: Sequence[str] | None = None,
                     title: str | None = None, panel=(4.6, 3.6), dpi: int = 100, save=None) -> Figure:
    """Several metrics over training, one panel each, one line per condition; one legend beside the panels.

    Args:
      steps: (K,) the steps at which the metrics were measured.
      panels: {y label: {condition: (K,) or (runs, K)}}; every panel has the same conditions.
        Several runs (seeds) are drawn as their mean and a min-max band, and the legend says
        how many runs each line averages; one run is a plain line (no band).
      titles: one title per panel (default none).

    Returns:
      Figure; the legend sits to the right of the last panel, so it never covers a curve.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"panels must be a non-empty dict {{y label: {{condition: values}}}}, got "
                        f"{type(panels).__name__}")
    checked = {ylabel: _series(steps, curves, "steps") for ylabel, curves in panels.items()}
    names = [list(runs) for _, runs in checked.values()]
    if any(n != names[0] for n in names):
        raise ValueError(f"panels have different conditions {names}: expected the same conditions in every panel")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"titles has {len(titles)} entries for {len(panels)} panels: expected one per panel")
    fig = _figure(panel[0] * len(panels) + 2.6, panel[1] + 0.4, dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for p, (ax, (ylabel, (x, runs))) in enumerate(zip(axes, checked.items())):
        for i, (name, v) in enumerate(runs.items()):
            label = name if v.shape[0] == 1 else f"{name} (mean of {v.shape[0]}, band min-max)"
            _plot_band(ax, x, v, i, label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if titles is not None:
            ax.set_title(titles[p], fontsize=10)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)
