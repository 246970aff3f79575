"""Attention variants: one frozen config that says how a `MultiHeadAttention` computes.

Every published fix in the lessons is a field here, and every named variant is a
line in `VARIANTS`. A researcher's new variant is one function plus one line:

    def my_attention(q, k, v, mask, bias):          # (B,T,N,H) x3 -> out, weights
        ...
    register_variant("mine", AttentionConfig(fn=my_attention))

and then `--variant mine` (or, without registering, `--variant my_module:my_attention` or
`--variant path/to/file.py:my_attention`, both found from the current directory) runs it
through the lessons, the benchmarks, `tinytf compare` and every model.
`tinytf.variant_contract.check_variant` checks such a function in seconds before anything
trains.

Reading order: `AttentionConfig`; two published variants written as plain functions
(`softpick`, a normalizer; `differential_attention`, a whole attention function); the
registry `VARIANTS`; `load_object` and `get_variant`, which resolve what a user types.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from tinytf.attention import NORMALIZERS, grouped_logits, softmax, window_bounds
from tinytf.attention.normalizers import NEG
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


# ------------------------------------------------- two published variants, as plain functions
def softpick(logits: jax.Array, mask: jax.Array | None = None, *, eps: float = 1e-6) -> jax.Array:
    """Softpick, a rectified softmax (Zuhri et al. 2025, "Softpick: No Attention Sink, No
    Massive Activations with Rectified Softmax").

    Math: w_i = relu(exp(x_i) - 1) / (sum_j |exp(x_j) - 1| + eps), j over the visible keys.

    A key whose logit is negative gets exactly zero weight, and the weights of a row sum to
    at most one (to zero when every logit is negative), so no key has to take the attention a
    head does not want to spend: the paper reports a 0 % sink rate. Computed stably with
    numerator and denominator multiplied by exp(-m), m = max(0, max_j x_j), which gives the
    same value (eps is scaled alike). Masked keys and fully masked rows get zero weight.

    Args:
      logits: (..., S) attention logits (already scaled, bias added).
      mask: optional bool, broadcastable to logits; True = may attend.

    Returns:
      weights of the logits' shape, float32.
    """
    x = logits.astype(jnp.float32)
    if mask is not None:
        x = jnp.where(mask, x, NEG)  # exp(NEG - m) underflows to 0
    m = jnp.maximum(jnp.max(x, axis=-1, keepdims=True), 0.0)  # (..., 1), >= 0 so exp(-m) <= 1
    shifted = jnp.exp(x - m) - jnp.exp(-m)  # (exp(x) - 1) * exp(-m)
    if mask is not None:
        shifted = jnp.where(mask, shifted, 0.0)  # a masked key counts in neither sum
    denominator = jnp.sum(jnp.abs(shifted), axis=-1, keepdims=True) + eps * jnp.exp(-m)
    return jax.nn.relu(shifted) / denominator


DIFF_LAMBDA = 0.8
"""Differential attention's lambda here: the paper's lambda_init for deep layers (0.8 - 0.6 exp(-0.3 (l-1)) -> 0.8)."""


def differential_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                           bias: jax.Array | None = None, *, lam: float = DIFF_LAMBDA) -> tuple[jax.Array, jax.Array]:
    """Differential attention (Ye et al. 2024, "Differential Transformer"), with a fixed lambda.

    Math, per head, with the query and key channels split in two halves of H/2:
        A1 = softmax(q1 k1^T / sqrt(H/2) + bias),  A2 = softmax(q2 k2^T / sqrt(H/2) + bias)
        out = (1 - lambda) * RMSNorm((A1 - lambda A2) v)
    The second map is subtracted like a noise-cancelling reference: attention both maps put
    on the same keys (a sink, say) cancels. The headwise RMSNorm (no gain) and the factor
    (1 - lambda) are the paper's. In the paper lambda is learned per layer (through four
    vectors, starting at lambda_init); a variant function has no parameters, so here lambda
    stays at `lam` (0.8, the paper's lambda_init for deep layers).

    Args:
      q: (B, T, N, H) with H even; k, v: (B, S, N, H).
      mask: optional bool, broadcastable to (B, N, T, S); True = may attend.
      bias: optional float, broadcastable to (B, N, T, S), added to both maps' logits.

    Returns:
      out (B, T, N, H) in q's dtype; weights A1 - lambda A2 (B, N, T, S), float32 (may be negative).
    """
    H = q.shape[-1]
    if H % 2:
        raise ValueError(f"differential attention splits each head in two: head dim H={H} must be even")
    half = H // 2

    def attention_map(qh, kh):  # (B, T, N, H/2), (B, S, N, H/2) -> (B, N, T, S)
        logits = grouped_logits(qh.astype(jnp.float32), kh.astype(jnp.float32)) / math.sqrt(half)
        return softmax(logits if bias is None else logits + bias.astype(jnp.float32), mask)

    weights = attention_map(q[..., :half], k[..., :half]) - lam * attention_map(q[..., half:], k[..., half:])
    out = jnp.einsum("bnts,bsnh->btnh", weights, v.astype(jnp.float32))  # (B, T, N, H)
    out = out * jax.lax.rsqrt(jnp.mean(out * out, axis=-1, keepdims=True) + 1e-5)  # headwise RMSNorm
    return ((1.0 - lam) * out).astype(q.dtype), weights


# ----------------------------------------------------------------------------- registry
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
    "softpick": AttentionConfig(normalizer=softpick),
    "diff": AttentionConfig(fn=differential_attention),
}
BUILTIN_VARIANTS = frozenset(VARIANTS)
"""The variants tinytf ships (tested in tests/test_variants.py); `register_variant` adds others."""


def register_variant(name: str, config: AttentionConfig, *, overwrite: bool = False) -> None:
    """Add a named variant so that `get_variant(name)` and `--variant name` find it."""
    if not isinstance(config, AttentionConfig):
        raise TypeError(f"config must be an AttentionConfig, got {type(config).__name__}")
    if name in VARIANTS and not overwrite:
        raise ValueError(f"variant {name!r} already exists; pass overwrite=True to replace it")
    VARIANTS[name] = config


def _import_file(path: Path, spec: str):
    """Import a user's .py file as a module (once per file content: a second load of the same file returns it)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    name = f"tinytf_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ValueError(f"variant {spec!r}: importing {path} raised {type(err).__name__}: {err}") from err
    finally:
        sys.path.remove(folder)
    return module


def load_object(spec: str):
    """The object named by "package.module:attr" or "path/to/file.py:attr", found from the current directory.

    A path (it ends in .py or contains a slash) is read relative to the current directory;
    a module name is imported with the current directory first on the import path, so a
    `mine.py` next to you is `mine:fn`. Errors say what was looked for and where.
    """
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rpartition(":")[2]:
        raise ValueError(f"variant {spec!r}: expected 'module:function' or 'path/to/file.py:function'")
    location, _, attr = spec.rpartition(":")
    cwd = os.getcwd()
    if location.endswith(".py") or "/" in location or os.sep in location:
        path = Path(location).expanduser()
        path = path if path.is_absolute() else Path(cwd) / path
        if not path.is_file():
            raise ValueError(f"variant {spec!r}: no file {location!r} (looked for {path}; relative paths start "
                             f"at the current directory {cwd})")
        module, where = _import_file(path.resolve(), spec), str(path)
    else:
        added = cwd not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as err:
            raise ValueError(f"variant {spec!r}: cannot load module {location!r} ({err}); looked in the current "
                             f"directory {cwd} and the installed packages. For a file, write "
                             f"path/to/file.py:{attr}") from err
        except Exception as err:
            raise ValueError(f"variant {spec!r}: importing module {location!r} raised {type(err).__name__}: "
                             f"{err}") from err
        finally:
            if added:
                sys.path.remove(cwd)
        where = f"module {location!r}"
    if not hasattr(module, attr):
        names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and (
            isinstance(v, AttentionConfig) or callable(v) and getattr(v, "__module__", None) == module.__name__))
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; it defines {', '.join(names)}" if names else "")
        raise ValueError(f"variant {spec!r}: cannot load {attr!r}: {where} has no attribute {attr!r}{hint}")
    return getattr(module, attr)


def get_variant(spec: str | AttentionConfig | Callable | None, base: AttentionConfig | None = None) -> AttentionConfig:
    """Resolve a variant: a registered name, "module:function", "file.py:function", a config or a function.

    Resolution only; `tinytf.variant_contract.load_variant` also checks a user's function
    against the contract (the command line does that before anything trains).

    Args:
      spec: "vanilla", "softmax1", ... (see `VARIANTS`); "package.module:attr" or
        "path/to/file.py:attr" (from the current directory, see `load_object`) where attr
        is an AttentionConfig or a function fn(q, k, v, mask, bias) -> (out, weights); an
        AttentionConfig; a function; or None (= vanilla).
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
        obj = load_object(spec)
        if not (isinstance(obj, AttentionConfig) or callable(obj)):
            raise ValueError(f"variant {spec!r} is a {type(obj).__name__}: expected a function fn(q, k, v, mask, "
                             "bias) -> (out, weights) or an AttentionConfig")
        config = get_variant(obj)
    else:
        close = difflib.get_close_matches(str(spec), VARIANTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown variant {spec!r}{hint}: expected one of {sorted(VARIANTS)}, 'module:function' "
                         "or 'path/to/file.py:function'")
    if base is None:
        return config
    default = AttentionConfig()
    changes = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if getattr(config, f.name) != getattr(default, f.name)}
    return base.replace(**changes)


__all__ = ["AttentionConfig", "VARIANTS", "BUILTIN_VARIANTS", "DIFF_LAMBDA", "softpick", "differential_attention",
           "register_variant", "load_object", "get_variant"]
