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
  attribution.py — attention rollout, grad x input, deletion / AOPC,
                   Kendall tau, precision@k                        (§7)
  registers.py   — ViT register tokens: token-norm outliers, attention
                   paid to CLS and registers (Darcet et al. 2024)
"""

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
    head_gates,
    head_importance,
    head_mask,
    importance_order,
    prune_heads,
    pruning_curve,
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
from tinytf.diagnostics.registers import norm_outliers, register_attention
from tinytf.diagnostics.representations import rank_residual, singular_values
from tinytf.diagnostics.similarity import cross_layer_similarity, js_divergence



__all__ = [
    "aopc", "attention_entropy", "attention_flow", "attention_rollout", "attribution_report", "bos_mass",
    "cross_layer_similarity", "deletion_curve", "detr_query_report",
    "entropy_stats", "grad_times_input", "head_gates", "head_importance", "head_mask",
    "importance_order", "js_divergence", "kendall_tau", "max_attention_logit", "max_logit",
    "needle_mass", "norm_outliers", "null_mass", "pairwise_cosine", "pairwise_js", "positional_encoding_similarity",
    "precision_at_k", "prune_heads", "pruning_curve", "query_embedding_diversity",
    "query_map_similarity", "rank_residual", "register_attention", "set_head_mask", "sine_2d_frequencies",
    "sine_pe_aliasing", "singular_values", "sink_rate", "sink_scores",
]
