"""Figures of attention and its diagnostics (matplotlib, headless by default).

Every function takes plain arrays (the outputs of `tinytf.diagnostics` or
`capture_attention`), returns a `matplotlib.figure.Figure`, and writes a PNG
when given `save=path`. Figures are built without pyplot, so they work on a
machine with no display and never pile up in pyplot's global state; in a
notebook, display the returned figure. The PNG is exactly `figsize * dpi`
pixels (no tight cropping). Importing this package selects the Agg backend
unless pyplot was already imported with a backend of the user's choice.

Reading order:
  maps.py   — `attention_grid` (heads x layers heatmaps with token labels),
              `attention_on_image` (ViT patches, DETR 8x8 grid), `detr_queries`
              (boxes and every query's map);
  curves.py — `metric_curves` (vs training step), `length_curves` (vs sequence
              length), `pruning_curves`, `deletion_curves`, `rank_vs_depth`,
              `condition_panels` (several metrics, one line per condition and seeds);
  conditions.py — `seed_bars`, `condition_curves`, `panel_row` (a baseline and its fixes over
              several seeds: mean, min-max spread only with >= 2 seeds).
  panels.py — `sweep_panels` (metrics vs a swept parameter), `query_rows`,
              `annotated_heatmap`, `heatmap_panels`, `grouped_bars`, `layer_similarity`, `run_curves`.
  attribution.py — `attribution_maps` (attribution methods side by side on images),
              `register_use` (token norms, attention to CLS and registers);
  queries.py — `code_similarity_maps` (does a positional code resolve the grid?),
              `feature_map_rgb` (a class feature map as a picture).
"""

import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # headless unless the user already chose a pyplot backend
    matplotlib.use("Agg")

from tinytf.plots.attribution import attribution_maps, register_use  # noqa: E402
from tinytf.plots.curves import (  # noqa: E402
    condition_panels,
    deletion_curves,
    length_curves,
    metric_curves,
    pruning_curves,
    rank_vs_depth,
)
from tinytf.plots.conditions import condition_curves, panel_row, seed_bars  # noqa: E402
from tinytf.plots.maps import attention_grid, attention_on_image, detr_queries  # noqa: E402
from tinytf.plots.panels import (  # noqa: E402
    annotated_heatmap,
    grouped_bars,
    heatmap_panels,
    layer_similarity,
    query_rows,
    run_curves,
    sweep_panels,
)
from tinytf.plots.queries import code_similarity_maps, feature_map_rgb  # noqa: E402

__all__ = ["attention_grid", "attention_on_image", "detr_queries", "metric_curves", "length_curves",
           "pruning_curves", "deletion_curves", "rank_vs_depth", "condition_curves", "seed_bars", "panel_row",
           "sweep_panels", "query_rows", "annotated_heatmap", "heatmap_panels", "grouped_bars",
           "layer_similarity", "run_curves", "condition_panels", "code_similarity_maps",
           "feature_map_rgb", "attribution_maps", "register_use"]
