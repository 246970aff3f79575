"""The summary figure of `tinytf compare`: one panel per row, one bar per variant."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tinytf.plots._common import PALETTE as _PALETTE
from tinytf.plots._common import figure as _figure
from tinytf.plots._common import finish as _finish


def plot_compare(report: dict, save=None, *, dpi: int = 110) -> Figure:
    """Bars: mean over seeds of each row's headline metric per variant; dots: the seeds;
    error bars: the standard deviation over seeds (drawn only with >= 2 seeds). The cost
    panel shows time and memory relative to the reference at the longest length.

    Args:
      report: the dict `tinytf.apps.compare.run_compare` returns (compare.json).
      save: optional PNG path.
    """
    rows = [r for r in report["rows"] if r != "cost"]
    has_cost = "cost" in report["rows"]
    panels = len(rows) + has_cost
    specs = list(report["variants"])
    colors = {s: _PALETTE[i % len(_PALETTE)] for i, s in enumerate(specs)}
    fig = _figure(2.6 * panels, 3.2, dpi)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    x = np.arange(len(specs))
    for ax, row in zip(axes, rows):
        r = report["rows"][row]
        head = r["headline"]
        for i, spec in enumerate(specs):
            v = r["variants"][spec]
            s = v["summary"][head]
            seeds = [m[head] for m in v["seeds"].values() if m.get(head) is not None]
            if s["mean"] is not None:
                ax.bar(i, s["mean"], color=colors[spec], alpha=0.6, width=0.6)
            if s["spread"] is not None:
                ax.errorbar(i, s["mean"], yerr=s["spread"], color="black", capsize=4, lw=1)
            ax.plot(np.full(len(seeds), i), seeds, "o", color="black", ms=3)
        ax.set_title(f"{row}\n{head}", fontsize=9)
        ax.set_xticks(x, specs, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    if has_cost:
        ax = axes[-1]
        ratios = report["rows"]["cost"]["ratios"]
        longest = max(report["rows"]["cost"]["settings"]["cost_lengths"])
        for i, spec in enumerate(specs):
            ax.bar(i - 0.17, ratios[spec][f"time@{longest}"], width=0.32, color=colors[spec], alpha=0.6,
                   edgecolor="black", lw=0.5)
            ax.bar(i + 0.17, ratios[spec][f"memory@{longest}"], width=0.32, color=colors[spec], alpha=0.6,
                   hatch="//", edgecolor="black", lw=0.5)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"cost at T={longest}\nratio to {report['reference']}", fontsize=9)
        ax.set_xticks(x, specs, rotation=30, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        # the legend explains the fill pattern only: the colour is the variant (as in every panel)
        key = [Patch(facecolor="white", edgecolor="black", lw=0.5, label="time"),
               Patch(facecolor="white", edgecolor="black", lw=0.5, hatch="//", label="memory")]
        ax.legend(handles=key, fontsize=7, loc="upper left", framealpha=0.8)
    seeds = report["config"]["seeds"]
    fig.suptitle(f"tinytf compare: bars = mean over {len(seeds)} seed(s), dots = seeds, "
                 f"error bars = std over seeds", fontsize=9)
    return _finish(fig, save)


__all__ = ["plot_compare"]
