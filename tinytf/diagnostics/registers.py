"""Register tokens and high-norm outliers in vision transformers (Darcet et al. 2024).

Darcet, Oquab, Mairal and Bojanowski, "Vision Transformers Need Registers" (ICLR 2024):
large, long-trained ViTs grow a few patch tokens with a very large norm on background
patches; those tokens hold global information and spoil the attention maps. Adding a
few learned tokens without a loss (registers) gives the network another place for that
information, and the outliers go. Two measurements, read in this order:

  1. `norm_outliers` — how far the largest token norms stand out from the median;
  2. `register_attention` — how much attention the class token and the patches pay
     to the class token and to the registers, per layer.

Token order as in `tinytf.models.ViT`: [CLS, register_1 .. register_R, patches].
"""

from __future__ import annotations

import jax
import numpy as np

from tinytf.diagnostics.common import as_layers

Array = jax.Array


def norm_outliers(tokens, *, factor: float = 2.0) -> dict[str, float]:
    """How far the largest token norms stand out: max / median, and the share above factor x median.

    Math: n_i = ||x_i||_2 over all tokens of all examples; returns max(n) / median(n) and
    mean(n > factor * median(n)) (Darcet et al. 2024 see a bimodal norm distribution with
    about 2% of tokens in the high mode).

    Args:
      tokens: (B, P, D) token vectors (e.g. the patch tokens of the last block's output),
        or (B, P) norms already computed.
      factor: the outlier line, in multiples of the median norm.

    Returns:
      {"max_over_median": float, "outlier_share": float in [0, 1]}.
    """
    x = np.asarray(tokens)  # computed in the input's precision
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.ndim == 3:
        x = np.linalg.norm(x, axis=-1)  # (B, P)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"tokens has shape {np.shape(tokens)}: expected (B, P, D) vectors or (B, P) norms")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    median = np.median(x)
    if not median > 0:
        raise ValueError("the median token norm is 0: expected token vectors with a positive median norm")
    return {"max_over_median": float(x.max() / median), "outlier_share": float((x > factor * median).mean())}


def register_attention(maps, num_registers: int, *, layers=None) -> dict[str, dict[str, float]]:
    """Attention paid to the class token and to the registers, per layer (head mean, batch mean).

    Math: with A the head-averaged (B, T, T) map, CLS = token 0, registers R = 1..r and
    patches P after them: cls_to_cls = A[0, 0], cls_to_registers = sum_{j in R} A[0, j],
    patches_to_registers = mean_{i in P} sum_{j in R} A[i, j], patches_to_cls =
    mean_{i in P} A[i, 0], each averaged over examples. With uniform attention the
    registers get r / T of every row.

    Args:
      maps: {layer: (B, N, T, T)} self-attention maps of a ViT (e.g. from `capture_attention`).
      num_registers: r (0 gives zero register mass).
      layers: optional layer names to report (default every layer).

    Returns:
      {layer name: {"cls_to_cls", "cls_to_registers", "patches_to_registers", "patches_to_cls"}}.
    """
    if isinstance(num_registers, bool) or not isinstance(num_registers, int) or num_registers < 0:
        raise ValueError(f"num_registers must be an int >= 0, got {num_registers!r}")
    first = 1 + num_registers  # first patch token
    out = {}
    for name, w in as_layers(maps, layers=layers):
        B, N, T, S = w.shape
        if T != S or T <= first:
            raise ValueError(f"layer {name!r} has map shape {tuple(w.shape)}: expected square (B, N, T, T) maps "
                             f"with T > 1 + num_registers = {first}")
        a = np.asarray(w).mean(1)  # (B, T, T) head mean, in the maps' precision
        out[name] = {"cls_to_cls": float(a[:, 0, 0].mean()),
                     "cls_to_registers": float(a[:, 0, 1:first].sum(-1).mean()),
                     "patches_to_registers": float(a[:, first:, 1:first].sum(-1).mean()),
                     "patches_to_cls": float(a[:, first:, 0].mean())}
    return out


__all__ = ["norm_outliers", "register_attention"]
