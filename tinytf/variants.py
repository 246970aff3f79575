"""Attention variants: one frozen config that says how a `MultiHeadAttention` computes.

Every published fix in the lessons is a field here, and every named variant is a
line in `VARIANTS`. A researcher's new variant is one function plus one line:

    def my_attention(q, k, v, mask, bias):          # (B,T,N,H) x3 -> out, weights
        ...
    register_variant("mine", AttentionConfig(fn=my_attention))

and then `--variant mine` (or `--variant my_module:my_attention` without
registering) runs it through the lessons, the benchmarks and every model.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable, Literal

from tinytf.attention import NORMALIZERS

AttentionFn = Callable  # fn(q, k, v, mask, bias) -> (out (B,T,N,H), weights (B,N,T,S) or None)


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """How one attention layer computes. Defaults are vanilla softmax attention."""

    normalizer: str | Callable = "softmax"
    """"softmax", "softmax1" (Miller 2023), "ssmax" (Nakanishi 2025, with a learnable
    per-head s), "sigmoid" (Gu et al. 2024), or a callable (logits, mask) -> weights."""
    qk_norm: bool = False
    """LayerNorm on queries and keys over the head dim (Dehghani et al. 2023): bounds the logits."""
    gate: bool = False
    """Sigmoid output gate after attention, elementwise, from the layer input (Qiu et al. 2025, G1)."""
    sink: bool = False
    """A learnable per-head sink logit: an extra key with zero value that can absorb attention."""
    window: int | None = None
    """Causal sliding window: each query sees its last `window` keys (Beltagy et al. 2020)."""
    position: Literal["none", "rope", "alibi"] = "none"
    """Position inside attention: RoPE on queries/keys (Su et al. 2021) or an ALiBi bias (Press et al. 2022)."""
    rope_base: float = 10000.0
    chunk_size: int | Literal["auto"] | None = "auto"
    """Key-block size of the memory-efficient path; "auto" chunks long inputs (S >= 2048)
    unless attention maps are being captured; None always uses the dense path."""
    logit_cap: float | None = None
    """Soft-cap the scaled logits to (-c, c) with c * tanh(x / c) (Gemma 2, Gemma Team 2024); None = off."""
    fn: AttentionFn | None = None
    """A custom attention function fn(q, k, v, mask, bias) -> (out, weights) replacing the maths."""
    ssmax_init: float = 0.3
    """Initial per-head s of scalable softmax (logits * s * log n); 0.3 ~ 1/log(32)."""
    sigma_reparam: bool = False
    """sigma-Reparam (Zhai et al. 2023): every linear map W -> gamma W / sigma(W)."""
    use_bias: bool = True
    """Biases in the query/key/value/output projections."""

    def __post_init__(self):
        if isinstance(self.normalizer, str) and self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {sorted(NORMALIZERS)} or a callable, got {self.normalizer!r}")
        if self.position not in ("none", "rope", "alibi"):
            raise ValueError(f"position must be 'none', 'rope' or 'alibi', got {self.position!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")
        if self.logit_cap is not None and not (isinstance(self.logit_cap, (int, float)) and self.logit_cap > 0):
            raise ValueError(f"logit_cap must be a number > 0 or None, got {self.logit_cap!r}")
        if self.sink and self.normalizer != "softmax":
            raise ValueError(f"sink=True needs normalizer='softmax', got {self.normalizer!r}")
        if not (self.chunk_size in ("auto", None) or (isinstance(self.chunk_size, int) and self.chunk_size > 0)):
            raise ValueError(f"chunk_size must be a positive int, 'auto' or None, got {self.chunk_size!r}")

    def replace(self, **changes) -> "AttentionConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


VARIANTS: dict[str, AttentionConfig] = {
    "vanilla": AttentionConfig(),
    "softmax1": AttentionConfig(normalizer="softmax1"),
    "ssmax": AttentionConfig(normalizer="ssmax"),
    "sigmoid": AttentionConfig(normalizer="sigmoid"),
    "qk_norm": AttentionConfig(qk_norm=True),
    "gated": AttentionConfig(gate=True),
    "sink": AttentionConfig(sink=True),
    "window": AttentionConfig(window=16),
    "sigma_reparam": AttentionConfig(sigma_reparam=True),
}


def register_variant(name: str, config: AttentionConfig, *, overwrite: bool = False) -> None:
    """Add a named variant so that `get_variant(name)` and `--variant name` find it."""
    if not isinstance(config, AttentionConfig):
        raise TypeError(f"config must be an AttentionConfig, got {type(config).__name__}")
    if name in VARIANTS and not overwrite:
        raise ValueError(f"variant {name!r} already exists; pass overwrite=True to replace it")
    VARIANTS[name] = config


def get_variant(spec: str | AttentionConfig | Callable | None, base: AttentionConfig | None = None) -> AttentionConfig:
    """Resolve a variant: a registered name, "module:function", a config or a function.

    Args:
      spec: "vanilla", "softmax1", ... (see `VARIANTS`); "package.module:attr" where
        attr is an AttentionConfig, or a function fn(q, k, v, mask, bias) -> (out,
        weights); an AttentionConfig; a function; or None (= vanilla).
      base: fields of this config are kept where the variant does not set them
        (e.g. a lesson's position="rope"); only fields that differ from the
        default in the variant override the base.

    Returns:
      An AttentionConfig.
    """
    if spec is None:
        config = AttentionConfig()
    elif isinstance(spec, AttentionConfig):
        config = spec
    elif callable(spec):
        config = AttentionConfig(fn=spec)
    elif isinstance(spec, str) and spec in VARIANTS:
        config = VARIANTS[spec]
    elif isinstance(spec, str) and ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"variant {spec!r}: cannot load {attr!r} from module {module_name!r} ({err})") from err
        config = get_variant(obj)
    else:
        raise ValueError(f"unknown variant {spec!r}: expected one of {sorted(VARIANTS)} or 'module:function'")
    if base is None:
        return config
    default = AttentionConfig()
    changes = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(default, f.name)}
    return base.replace(**changes)


__all__ = ["AttentionConfig", "VARIANTS", "register_variant", "get_variant"]
