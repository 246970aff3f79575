"""Diagnostics: measure what attention does, with definitions from the papers.

Arrays in, numbers out; no plotting here (see `tinytf.plots`). Attention maps
are `(B, N, T, S)` arrays or the dict `{layer_name: weights}` returned by
`tinytf.capture.capture_attention(model, *inputs)`. Each docstring cites the paper that defines its
metric; the lesson that uses it is in brackets (`tinytf lessons` lists them).

Read in this order:
  maps.py        — entropy, max logit, sink rate, BOS/null mass, needle mass
                   [entropy-collapse, attention-sinks, dilution]
  representations.py — rank-collapse residual, singular values     [rank-collapse]
  similarity.py  — JS divergence, cross-layer similarity           [heads]
  queries.py     — the DETR checklist: query-map cosine / JS, query embeddings,
                   positional-code aliasing                        [detr-queries]
  heads.py       — head importance, masking and pruning curves     [heads]
  circuits.py    — previous-token and induction head scores        [heads]
  stability.py   — attention_watch: max logit and entropy during training [entropy-collapse]
  attribution.py — attention rollout, grad x input, deletion / AOPC,
                   Kendall tau, precision@k, attention flow         [vit-attention]
  positions.py   — is a position code relative? (shift every position) [positions]
  scaling.py     — why 1/sqrt(d): normaliser saturation vs head dim;
                   permutation equivariance                        [attention-basics]
  sinks.py       — the active/dormant head, massive activations, value norms, sink_report [attention-sinks]
  streaming.py   — NLL and row entropy under KV-cache policies, eviction_report (StreamingLLM) [attention-sinks]
  registers.py   — ViT register tokens: token-norm outliers, attention
                   paid to CLS and registers (Darcet et al. 2024)  [vit-attention]
"""

from tinytf.diagnostics.circuits import copy_head_scores
from tinytf.diagnostics.attribution import (
    aopc,
    attention_flow,
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
from tinytf.diagnostics.registers import norm_outliers, register_attention
from tinytf.diagnostics.representations import rank_residual, singular_values
from tinytf.diagnostics.scaling import logit_scale_sweep, normalizer_row_stats, permutation_equivariance_error
from tinytf.diagnostics.similarity import adjacent_layer_js, cross_layer_similarity, js_divergence
from tinytf.diagnostics.sinks import (active_dormant_head, lm_states, massive_activations, sequence_maps, sink_recorder,
                                     sink_report, value_norm_ratio)
from tinytf.diagnostics.stability import attention_watch
from tinytf.diagnostics.streaming import eviction_report, streaming_report



__all__ = [
    "active_dormant_head", "aopc", "attention_entropy", "attention_flow", "attention_rollout", "attribution_report", "bos_mass",
    "cross_layer_similarity", "deletion_curve", "detr_query_report",
    "entropy_stats", "grad_times_input", "head_gates", "head_importance", "head_mask",
    "importance_order", "js_divergence", "kendall_tau", "lm_states", "massive_activations", "max_attention_logit", "max_logit",
    "needle_mass", "norm_outliers", "null_mass", "pairwise_cosine", "pairwise_js", "positional_encoding_similarity",
    "precision_at_k", "prune_heads", "pruning_curve", "query_embedding_diversity",
    "query_map_similarity", "rank_residual", "register_attention", "set_head_mask", "sine_2d_frequencies",
    "sine_pe_aliasing", "singular_values", "sink_rate", "sink_scores", "streaming_report", "value_norm_ratio",
    # circuits.py, heads.py, similarity.py, positions.py, scaling.py, stability.py
    "attention_watch", "copy_head_scores", "compare_pruning_orders", "jitted_metric", "pruning_summary",
    "adjacent_layer_js", "position_shift_error", "logit_scale_sweep", "normalizer_row_stats",
    "permutation_equivariance_error",
    "sequence_maps", "sink_report", "sink_recorder", "eviction_report",
]
