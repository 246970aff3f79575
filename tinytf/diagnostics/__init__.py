"""Diagnostics: measure what attention does, with definitions from the papers.

Arrays in, numbers out; no plotting here (see `tinytf.plots`). Attention maps
are `(B, N, T, S)` arrays or the dict `{layer_name: weights}` returned by
`tinytf.capture.capture_attention(model, *inputs)`. Each docstring cites the paper that defines its metric and the section
of the project's PHENOMENA notes (§N) with the toy recipe.

Read in this order:
  maps.py        — entropy, max logit, sink rate, BOS/null mass, needle mass (§2-§4)
  representations.py — rank-collapse residual, singular values     (§1)
  similarity.py  — JS divergence, cross-layer similarity           (§8)
  queries.py     — the DETR checklist: query-map cosine / JS, query embeddings,
                   positional-code aliasing                        (§5)
  heads.py       — head importance, masking and pruning curves     (§6)
  circuits.py    — previous-token and induction head scores
  stability.py   — attention_watch: max logit and entropy during training
  attribution.py — attention rollout, grad x input, deletion / AOPC,
                   Kendall tau, precision@k                        (§7)
  positions.py   — is a position code relative? (shift every position)
  scaling.py     — why 1/sqrt(d): normaliser saturation vs head dim;
                   permutation equivariance
"""

from tinytf.diagnostics.circuits import copy_head_scores
from tinytf.diagnostics.attribution import (
    aopc,
    attention_rollout,
    attribution_report,
    deletion_curve,
    grad_times_input,
    kendall_tau,
    precision_at_k,
)
from tinytf.diagnostics.heads import (
    compare_pruning_orders,
    head_gates,
    head_importance,
    head_mask,
    importance_order,
    jitted_metric,
    prune_heads,
    pruning_curve,
    pruning_summary,
    set_head_mask,
)
from tinytf.diagnostics.maps import (
    attention_entropy,
    bos_mass,
    entropy_stats,
    max_attention_logit,
    max_logit,
    needle_mass,
    null_mass,
    sink_rate,
    sink_scores,
)
from tinytf.diagnostics.queries import (
    detr_query_report,
    pairwise_cosine,
    pairwise_js,
    positional_encoding_similarity,
    query_embedding_diversity,
    query_map_similarity,
    sine_2d_frequencies,
    sine_pe_aliasing,
)
from tinytf.diagnostics.positions import position_shift_error
from tinytf.diagnostics.representations import rank_residual, singular_values
from tinytf.diagnostics.scaling import logit_scale_sweep, normalizer_row_stats, permutation_equivariance_error
from tinytf.diagnostics.stability import attention_watch
from tinytf.diagnostics.similarity import adjacent_layer_js, cross_layer_similarity, js_divergence



__all__ = [
    "aopc", "attention_entropy", "attention_rollout", "attribution_report", "bos_mass",
    "cross_layer_similarity", "deletion_curve", "detr_query_report",
    "entropy_stats", "grad_times_input", "head_gates", "head_importance", "head_mask",
    "importance_order", "js_divergence", "kendall_tau", "max_attention_logit", "max_logit",
    "needle_mass", "null_mass", "pairwise_cosine", "pairwise_js", "positional_encoding_similarity",
    "precision_at_k", "prune_heads", "pruning_curve", "query_embedding_diversity",
    "query_map_similarity", "rank_residual", "set_head_mask", "sine_2d_frequencies",
    "sine_pe_aliasing", "singular_values", "sink_rate", "sink_scores",
    # circuits.py, heads.py, similarity.py, positions.py, scaling.py, stability.py
    "attention_watch", "copy_head_scores", "compare_pruning_orders", "jitted_metric", "pruning_summary",
    "adjacent_layer_js", "position_shift_error", "logit_scale_sweep", "normalizer_row_stats",
    "permutation_equivariance_error",
]
