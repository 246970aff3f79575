"""Attention as pure functions: the first package to read in tinytf.

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need"):

    Attention(Q, K, V) = normalize(Q K^T * scale + bias, mask) V,   scale = 1/sqrt(H)

Reading order:
  1. masks.py        which keys each query may see (`causal_mask`, `padding_mask`,
                     `sliding_window_mask`, `combine_masks`);
  2. normalizers.py  how one row of logits becomes weights (`softmax`, `softmax1`,
                     `ssmax`, `sigmoid`, a sink logit);
  3. dense.py        the maths itself, every weight materialised;
  4. core.py         `dot_product_attention`, the function every layer calls: it picks a path;
  5. flash.py        the same maths tile by tile (FlashAttention): causal tiles skipped, memory
                     linear in length forward and backward;
  6. fused.py        cuDNN on a GPU.

Layout (JAX's own, so `jax.nn.dot_product_attention` is a drop-in oracle):
query (B, T, N, H), key/value (B, S, N, H), weights (B, N, T, S), where B is batch,
T query length, S key length, N heads, H head dim. Masks are boolean, True = may
attend, broadcastable to (B, N, T, S).

A query row whose keys are all masked gets zero weights and a zero output (not
NaN), and its gradients are finite: padding rows are common and must not poison
training.
"""

from tinytf.attention.core import dot_product_attention
from tinytf.attention.dense import (check_attention_inputs, dense_attention, dropout_weights, grouped_logits,
                                   grouped_output, soft_cap)
from tinytf.attention.flash import auto_tiles, flash_attention
from tinytf.attention.fused import cudnn_supported
from tinytf.attention.masks import (ALIGNMENTS, causal_mask, combine_masks, length_mask, local_window_mask,
                                    padding_mask, query_offset, sliding_window_mask, structured_mask,
                                    visible_key_count, window_bounds)
from tinytf.attention.normalizers import (NORMALIZERS, ONLINE_NORMALIZERS, Normalizer, get_normalizer, sigmoid,
                                          softmax, softmax1, softmax_with_sink, ssmax)

__all__ = [
    "ALIGNMENTS", "causal_mask", "padding_mask", "sliding_window_mask", "local_window_mask", "length_mask",
    "combine_masks", "structured_mask", "visible_key_count", "query_offset", "window_bounds",
    "grouped_logits", "grouped_output", "dropout_weights", "softmax", "softmax1", "softmax_with_sink", "ssmax", "sigmoid", "NORMALIZERS",
    "ONLINE_NORMALIZERS", "Normalizer", "get_normalizer", "dot_product_attention", "dense_attention",
    "flash_attention", "auto_tiles", "check_attention_inputs", "soft_cap", "cudnn_supported",
]
