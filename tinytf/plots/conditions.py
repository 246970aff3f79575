"""Comparing conditions (a baseline and its fixes) over several seeds: bars and curves.

A lesson trains the same model under several conditions and seeds and wants to show,
per condition, a few measured numbers (bars) or a measured curve (against training step,
position or length). Both functions take {condition: values} with the seeds along the
first axis, draw the mean, and draw the spread (min to max over seeds) only when there
are at least two seeds, stating n in the legend or title. Legends sit outside the axes,
below them, so they never cover a bar or a curve. Pass `ax=` to draw into one panel of a
larger figure; the functions return the Figure either way.

Reading order: `seed_bars`, then `condition_curves`, then `panel_row` (one
row of such panels in one figure).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from tinytf.plots._common import PALETTE, as_array, figure, finish


def _legend_below(ax, ncols: int) -> None:
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=max(1, ncols), frameon=False)


def _runs(values, name: str) -> np.ndarray:
    v = as_array(values, name)
    if v.ndim == 0:
        v = v[None]
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} has shape {v.shape}: expected one value per seed, shape (runs,)")
    return v


def seed_bars(values: Mapping, *, ylabel: str, title: str, ax=None, save=None, rotation: float = 25,
                 legend: bool | None = None) -> Figure:
    """One group of bars per condition, one bar per measured quantity: the mean over seeds.

    Args:
      values: {condition: {quantity: (runs,) values}} (a scalar counts as one run); every
        condition must have the same quantities and the same number of runs.
      ylabel, title: axis label and panel title (the number of seeds is appended).
      ax: draw into this Axes; default a new figure.
      rotation: of the condition names under the groups.
      legend: show the quantities' legend (default: when there are two or more quantities).

    Returns:
      Figure. With two or more runs each bar has a min-max whisker over the runs.
    """
    if not isinstance(values, Mapping) or not values:
        raise TypeError(f"values must be a non-empty dict {{condition: {{quantity: runs}}}}, got {type(values).__name__}")
    groups = list(values)
    quantities = list(values[groups[0]])
    if not quantities or any(list(values[g]) != quantities for g in groups):
        raise ValueError("every condition needs the same quantities, got " +
                         ", ".join(f"{g!r}: {list(values[g])}" for g in groups))
    runs = {(g, q): _runs(values[g][q], f"values[{g!r}][{q!r}]") for g in groups for q in quantities}
    n = {v.size for v in runs.values()}
    if len(n) != 1:
        raise ValueError(f"every condition and quantity needs the same number of runs, got sizes {sorted(n)}")
    n = n.pop()
    fig = figure(5.0, 3.6, 100) if ax is None else ax.figure
    ax = fig.add_subplot() if ax is None else ax
    x, width = np.arange(len(groups)), 0.8 / len(quantities)
    for i, q in enumerate(quantities):
        v = np.stack([runs[g, q] for g in groups])  # (groups, runs)
        mean = v.mean(1)
        spread = np.stack([mean - v.min(1), v.max(1) - mean]) if n > 1 else None  # (2, groups) min-max
        ax.bar(x + (i - (len(quantities) - 1) / 2) * width, mean, width, label=q, color=PALETTE[i % 10],
               yerr=spread, capsize=2 if n > 1 else 0)
    ax.set_xticks(x, groups, rotation=rotation, ha="right" if rotation else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f" (mean of {n} seeds, bars min-max)" if n > 1 else " (one seed)"), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if legend or (legend is None and len(quantities) > 1):
        _legend_below(ax, min(len(quantities), 2))
    return finish(fig, save)


def condition_curves(x, curves: Mapping, *, xlabel: str, ylabel: str, title: str, ax=None, vline=None,
                     vline_label: str | None = None, log_x: bool = False, bin: int = 1, save=None) -> Figure:
    """One curve per condition against x: the mean over seeds, and a min-max band with >= 2 seeds.

    Args:
      x: (K,) x values (training steps, positions, lengths).
      curves: {condition: (K,) or (runs, K)}.
      xlabel, ylabel, title: labels (the number of seeds is appended to the title).
      ax: draw into this Axes; default a new figure.
      vline, vline_label: an optional dotted vertical line (e.g. the training length).
      log_x: logarithmic x axis.
      bin: average x and every curve over consecutive groups of `bin` points (a remainder
        shorter than `bin` at the end is dropped), e.g. per-position losses in bins of 16.

    Returns:
      Figure.
    """
    xs = as_array(x, "x")
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"x has shape {xs.shape}: expected a non-empty 1-D sequence")
    if not isinstance(bin, int) or not 1 <= bin <= xs.size:
        raise ValueError(f"bin must be an int in [1, {xs.size}] (the number of x values), got {bin!r}")
    keep = xs.size // bin * bin
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty dict {{condition: values}}, got {type(curves).__name__}")
    fig = figure(5.0, 3.6, 100) if ax is None else ax.figure
    ax = fig.add_subplot() if ax is None else ax
    n, xb = None, xs[:keep].reshape(-1, bin).mean(1)
    for i, (name, values) in enumerate(curves.items()):
        v = as_array(values, f"curves[{name!r}]")
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] != xs.size:
            raise ValueError(f"curves[{name!r}] has shape {np.shape(values)}: expected ({xs.size},) or "
                             f"(runs, {xs.size}) to match x")
        n = v.shape[0]
        v = v[:, :keep].reshape(n, -1, bin).mean(2)  # (runs, K // bin)
        ax.plot(xb, v.mean(0), color=PALETTE[i % 10], marker="o", ms=3, lw=1.5, label=str(name))
        if v.shape[0] > 1:
            ax.fill_between(xb, v.min(0), v.max(0), color=PALETTE[i % 10], alpha=0.2, lw=0)
    if vline is not None:
        ax.axvline(vline, color="grey", ls=":", lw=1.2, label=vline_label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f" (mean of {n} seeds, band min-max)" if n and n > 1 else ""), fontsize=10)
    ax.grid(alpha=0.3)
    _legend_below(ax, 2)
    return finish(fig, save)


def panel_row(panels, *, suptitle: str, figsize=None, width_ratios=None, save=None) -> Figure:
    """One row of panels, each a `seed_bars` or a `condition_curves` plot.

    Args:
      panels: a list of ("bars", kwargs of `seed_bars`) or ("curves", kwargs of
        `condition_curves`) pairs, left to right (without `ax`/`save`).
      suptitle: the figure's title.
      figsize: (width, height) inches; default 4.6 inches per panel by 4.6.
      width_ratios: relative panel widths (default equal).

    Returns:
      Figure.
    """
    draw = {"bars": seed_bars, "curves": condition_curves}
    if not isinstance(panels, (list, tuple)) or not panels or any(
            not isinstance(p, (list, tuple)) or len(p) != 2 or p[0] not in draw for p in panels):
        raise ValueError(f"panels must be a non-empty list of ('bars' | 'curves', kwargs) pairs, got {panels!r}")
    fig = figure(*(figsize or (4.6 * len(panels), 4.6)), 100)
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=width_ratios)[0]
    for ax, (kind, kwargs) in zip(axes, panels):
        draw[kind](**kwargs, ax=ax)
    fig.suptitle(suptitle)
    return finish(fig, save)


__all__ = ["seed_bars", "condition_curves", "panel_row"]
