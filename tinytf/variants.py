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

from tinytf.attention import NORMALIZERS, window_bounds
from tinytf.checks import check_int
from tinytf.positional import ROPE_STYLES

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
    window: int | tuple[int, int] | None = None
    """An int W: causal sliding window, each query sees its last W keys (Beltagy et al. 2020).
    A pair (left, right): two-sided local window for encoders (query i sees i-left .. i+right)."""
    num_kv_heads: int | None = None
    """Key/value heads K (must divide num_heads): grouped-query attention (Ainslie et al. 2023);
    1 = multi-query (Shazeer 2019); None = as many as query heads."""
    dropout_rate: float = 0.0
    """Attention dropout on the weights during training (Vaswani et al. 2017); off after model.eval()."""
    position: Literal["none", "rope", "alibi"] = "none"
    """Position inside attention: RoPE on queries/keys (Su et al. 2021) or an ALiBi bias (Press et al. 2022)."""
    rope_base: float = 10000.0
    rope_style: Literal["interleaved", "halves"] = "interleaved"
    """RoPE channel pairs: "interleaved" (2i, 2i+1) as RoFormer/Llama, or "halves" (i, i+H/2) as
    GPT-NeoX/Hugging Face. Weights trained with one do not work with the other."""
    rope_fraction: float = 1.0
    """Partial rotary: rotate only this fraction of each head's channels (GPT-NeoX uses 0.25)."""
    rope_scale: float = 1.0
    """Multiply RoPE positions: < 1 is position interpolation for longer contexts (Chen et al. 2023)."""
    chunk_size: int | Literal["auto"] | None = "auto"
    """Tile size of the flash path; "auto" uses flash for long inputs (S >= 1024) unless attention
    maps are being captured; None always uses the dense path."""
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
        if isinstance(self.window, list):  # a frozen config must stay hashable
            object.__setattr__(self, "window", tuple(self.window))
        window_bounds(self.window)  # an int >= 1, a pair of ints >= 0, or None
        if self.num_kv_heads is not None:
            check_int("num_kv_heads", self.num_kv_heads, low=1)
        if isinstance(self.dropout_rate, bool) or not isinstance(self.dropout_rate, (int, float)) \
                or not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be a number in [0, 1), got {self.dropout_rate!r}")
        if self.rope_style not in ROPE_STYLES:
            raise ValueError(f"rope_style must be one of {ROPE_STYLES}, got {self.rope_style!r}")
        if isinstance(self.rope_fraction, bool) or not isinstance(self.rope_fraction, (int, float)) \
                or not 0.0 < self.rope_fraction <= 1.0:
            raise ValueError(f"rope_fraction must be in (0, 1], got {self.rope_fraction!r}")
        for name in ("rope_scale", "rope_base", "ssmax_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
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
