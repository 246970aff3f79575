"""The experiments of `tinytf compare`: each phenomenon's toy, trained once per (variant, seed).

Every experiment is a plain function `(attention, seed, settings) -> {metric: number}`
built from library pieces: the data generators (`tinytf.data`), the models
(`tinytf.models`), `tinytf.train.fit` and the diagnostics. Same seed, same numbers on a
CPU. `settings` holds what the experiment depends on (steps, lengths, ...): the cache
of `compare.py` keys on it. The recipes are the lessons' (lessons/NN_*.py), shortened:

  sinks       Bigram-Backcopy LM, 2 layers x 4 heads, RoPE, weight decay 0.1: Gu et al.'s
              sink rate Sink_1^0.3 and BOS mass of dormant rows (Gu et al. 2024; lesson 06)
  dilution    one-head needle retrieval trained at n in [8, 32], tested to 64x: needle mass
              and accuracy against n (Nakanishi 2025; lesson 07)
  entropy     copy task at learning rate 0.1: max attention logit, entropy, final loss
              (Zhai et al. 2023; Wortsman et al. 2023; lesson 05)
  rank        attention-only stack without skips, MLPs or norms, at init: relative rank
              residual against depth (Dong et al. 2021; lesson 04)
  induction   copy task at learning rate 3e-3: accuracy on the copied half (Olsson et al. 2022)
  vit         ViT on 16x16 shapes, 4 classes: held-out accuracy
  detr        DETR decoder on synthetic 8x8 feature maps: query-map pair cosine (last decoder
              layer) and AP50 (Carion et al. 2020; Meng et al. 2021; lesson 08)
  cost        one causal attention layer, forward + backward: time and XLA temporary memory
              against vanilla at several lengths (not seeded, measured afresh every run)
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf import data
from tinytf.capture import capture_attention
from tinytf.detection import box_cxcywh_to_xyxy, coco_ap, detr_loss, postprocess
from tinytf.diagnostics import (attention_entropy, bos_mass, max_logit, needle_mass, query_map_similarity,
                                rank_residual, sink_rate)
from tinytf.models import DETR, CausalLM, DETRConfig, LMConfig, NeedleRetriever, ViT, ViTConfig, needle_slot
from tinytf.nn import Encoder, MultiHeadAttention
from tinytf.train import accuracy, cross_entropy, fit
from tinytf.variants import AttentionConfig


# --------------------------------------------------------------------------- the configuration
QUICK_EXPERIMENTS = ("rank", "induction", "entropy", "cost")
"""The rows of `--quick`: those that fit about 3 minutes for two variants on two CPU cores.

Why sinks, dilution, ViT and DETR are in the full battery only: each (variant, row) pays one
XLA compilation of its training loop and evaluation (a new variant is a new program; the
seeds after the first reuse it through JAX's persistent compilation cache). Measured with
`BatteryConfig.quick()` settings, vanilla, first seed / second seed, cold cache, at a load of
6-13 on two cores (a reference lesson ran 2.1x slower than idle in the same minutes):
sinks 41 / 7 s, dilution 40 / 13 s, ViT 65 / 15 s, DETR 172 / 40 s. Two variants x 3 seeds
of these four rows alone come to about 8 minutes on idle cores, beyond the quick budget,
and fewer steps would stop vanilla from showing the phenomenon the row measures. The
numbers there did show it: sink rate 12 % and 23 % (seeds 0, 1); needle mass 0.97, 0.84,
0.49 at n = 32, 256, 2048 (seed 0)."""
QUICK_EXCLUDED_REASON = ("sinks, dilution, vit and detr are full-battery rows: each compiles its own training "
                         "loop per variant (about 40-170 s on a loaded CPU, an estimated 20-80 s idle), about 8 minutes for two "
                         "variants; run without --quick for them")


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    """What `tinytf compare` runs. Presets: `quick()` (the documented ~3 minutes for two variants
    on two CPU cores), `full()`, and `tiny()` (the test suite's smoke run: too short to mean anything)."""

    experiments: tuple[str, ...] = ("sinks", "dilution", "entropy", "rank", "induction", "vit", "detr", "cost")
    """The rows to run, in this order."""
    seeds: tuple[int, ...] = (0, 1, 2)
    sink_steps: int = 400
    needle_steps: int = 600
    needle_lengths: tuple[int, ...] = (32, 256, 2048)
    """Test lengths n; training sees n in [8, 32], so 2048 is 64x the longest training haystack."""
    entropy_steps: int = 300
    entropy_lr: float = 0.1
    induction_steps: int = 300
    vit_steps: int = 300
    detr_steps: int = 600
    rank_depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    rank_depth: int = 4
    """The depth the summary row reports (the whole curve is in compare.json)."""
    cost_lengths: tuple[int, ...] = (256, 1024, 4096)
    cost_repeats: int = 5
    eval_batch: int = 256
    """Held-out examples per evaluation (the same examples for every variant)."""

    @classmethod
    def quick(cls) -> "BatteryConfig":
        return cls(experiments=QUICK_EXPERIMENTS, seeds=(0, 1, 2), sink_steps=250, needle_steps=400,
                   entropy_steps=200, induction_steps=250,
                   vit_steps=200, detr_steps=300, cost_lengths=(256, 1024), cost_repeats=3)

    @classmethod
    def full(cls) -> "BatteryConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "BatteryConfig":
        return cls(experiments=("rank", "induction", "cost"), seeds=(0,), sink_steps=6, needle_steps=6,
                   needle_lengths=(32, 64), entropy_steps=6,
                   induction_steps=6, vit_steps=6, detr_steps=6, rank_depths=(1, 2, 4), cost_lengths=(64,),
                   cost_repeats=1, eval_batch=16)

    def as_dict(self) -> dict:
        return asdict(self)

    def settings(self, experiment: str) -> dict:
        """The fields one experiment depends on (its cache key), seeds excluded."""
        names = {"sinks": ("sink_steps",), "dilution": ("needle_steps", "needle_lengths"),
                 "entropy": ("entropy_steps", "entropy_lr"), "rank": ("rank_depths", "rank_depth"),
                 "induction": ("induction_steps",), "vit": ("vit_steps",), "detr": ("detr_steps",),
                 "cost": ("cost_lengths", "cost_repeats")}[experiment]
        return {"eval_batch": self.eval_batch, **{n: getattr(self, n) for n in names}}


def _held_out(seed: int) -> jax.Array:
    """Held-out data keys: far from the training keys (fold_in(key(seed), step)), the same for every variant."""
    return jax.random.key(1_000_003 + seed)


def _nan_to_none(metrics: dict) -> dict:
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in metrics.items()}


# --------------------------------------------------------------------------------- 1. sinks
SINK_TASK = data.make_bigram_backcopy_task(0)


def sinks(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Gu et al.'s sink rate after training a Bigram-Backcopy LM (the attention-sinks lesson's recipe)."""
    task = SINK_TASK
    config = LMConfig(vocab_size=task.num_tokens, d_model=64, num_layers=2, num_heads=4, mlp_ratio=1.0,
                      position="rope", attention=attention, max_len=64)
    model = CausalLM(config, rngs=nnx.Rngs(seed))
    sample = functools.partial(data.sample_bigram_backcopy, task=task, batch_size=32, seq_len=32)
    loss_fn = lambda m, b: cross_entropy(m(b["tokens"]), b["targets"], b["loss_mask"])  # noqa: E731
    history = fit(model, sample, steps=settings["sink_steps"], loss_fn=loss_fn, learning_rate=3e-3,
                  weight_decay=0.1, seed=seed, progress=False)
    held = data.sample_bigram_backcopy(_held_out(seed), task, batch_size=settings["eval_batch"], seq_len=32)
    maps = capture_attention(model, held["tokens"])  # {layer: (B, N, T, T)}
    dormant = ~held["trigger"] & (jnp.arange(32) > 0)  # (B, T) non-trigger queries after BOS
    bayes = -float(held["true_logprob"].sum() / held["loss_mask"].sum())
    logits = model(held["tokens"])
    return _nan_to_none({
        "sink_rate": sink_rate(maps), "bos_mass_dormant": bos_mass(maps, dormant),
        "bos_mass_trigger": bos_mass(maps, held["trigger"]),
        "excess_loss": float(cross_entropy(logits, held["targets"], held["loss_mask"])) - bayes,
        "trigger_accuracy": accuracy(logits, held["targets"], held["trigger"] & held["loss_mask"]),
        "stopped_early": float(history.stopped_early is not None)})


# ------------------------------------------------------------------------------ 2. dilution
def dilution(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Needle mass and retrieval accuracy against haystack length (the dilution lesson's recipe)."""
    model = NeedleRetriever(attention, rngs=nnx.Rngs(seed))
    sample = functools.partial(data.needle_haystack, batch_size=64, max_items=32, min_items=8)

    def loss_fn(m, b):
        return cross_entropy(m(b), b["target"])

    history = fit(model, sample, steps=settings["needle_steps"], loss_fn=loss_fn, learning_rate=3e-3,
                  weight_decay=0.1, seed=seed, progress=False)
    out = {"stopped_early": float(history.stopped_early is not None)}
    predict = nnx.jit(lambda m, b: m(b))
    for n in settings["needle_lengths"]:
        batch = data.needle_haystack(jax.random.fold_in(_held_out(seed), n), batch_size=settings["eval_batch"],
                                     max_items=n)
        weights = capture_attention(model, batch)["attn"]  # (B, N, 1, n)
        out[f"needle_mass@{n}"] = needle_mass(weights, 0, needle_slot(batch))
        out[f"accuracy@{n}"] = accuracy(predict(model, batch), batch["target"])
    return _nan_to_none(out)


# ------------------------------------------------------------------------------- 3. entropy
def _copy_task(batch_size: int):
    return functools.partial(data.copy_task, batch_size=batch_size, length=16, vocab_size=64)


def _copy_loss(model, batch):
    logits = model(batch["tokens"])
    return cross_entropy(logits, batch["targets"], batch["loss_mask"])


def entropy(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Max attention logit, attention entropy and loss after training the copy task at a high learning rate."""
    model = CausalLM(LMConfig.tiny(attention=attention), rngs=nnx.Rngs(seed))
    history = fit(model, _copy_task(16), steps=settings["entropy_steps"], loss_fn=_copy_loss,
                  learning_rate=settings["entropy_lr"], warmup=0.1, seed=seed, progress=False)
    held = _copy_task(settings["eval_batch"])(_held_out(seed))
    maps, logits = capture_attention(model, held["tokens"], with_logits=True)
    T = held["tokens"].shape[1]
    causal = jnp.tril(jnp.ones((T, T), bool))
    per_head = jnp.concatenate([attention_entropy(w, is_causal=True, skip_first=8) for w in maps.values()])
    return _nan_to_none({
        "max_logit": max_logit(logits, causal), "entropy_min": per_head.min(), "entropy_mean": per_head.mean(),
        "loss": _copy_loss(model, held), "stopped_early": float(history.stopped_early is not None)})


# ---------------------------------------------------------------------------------- 4. rank
def rank(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Relative rank residual of a random attention-only stack (no skips, MLPs or norms) against depth."""
    depth = max(settings["rank_depths"])
    stack = Encoder(depth, 64, 4, attention=attention, residual=False, use_mlp=False, norm="none",
                    final_norm=False, rngs=nnx.Rngs(seed))
    x = jax.random.normal(jax.random.fold_in(_held_out(seed), 1), (8, 32, 64))

    @nnx.jit
    def residuals(stack, x):
        out = []
        for layer in stack.layers:
            x = layer(x)
            out.append(rank_residual(x))
        return jnp.stack(out)

    r = np.asarray(residuals(stack, x))
    out = {f"residual@{d}": float(r[d - 1]) for d in settings["rank_depths"]}
    out["log10_residual"] = float(np.log10(max(r[settings["rank_depth"] - 1], 1e-12)))
    return out


# ----------------------------------------------------------------------------- 5. induction
def induction(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Accuracy on the copied half of the copy task (an induction head's job) at a sane learning rate."""
    model = CausalLM(LMConfig.tiny(attention=attention), rngs=nnx.Rngs(seed))
    history = fit(model, _copy_task(16), steps=settings["induction_steps"], loss_fn=_copy_loss,
                  learning_rate=3e-3, seed=seed, progress=False)
    held = _copy_task(2 * settings["eval_batch"])(_held_out(seed))
    logits = model(held["tokens"])
    return _nan_to_none({"accuracy": accuracy(logits, held["targets"], held["loss_mask"]),
                         "loss": cross_entropy(logits, held["targets"], held["loss_mask"]),
                         "stopped_early": float(history.stopped_early is not None)})


# ----------------------------------------------------------------------------------- 6. vit
def vit(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """Held-out accuracy of ViTConfig.tiny16() on 16x16 shapes (4 classes)."""
    shapes = functools.partial(data.shapes_classification, image_size=16, num_classes=4)
    model = ViT(ViTConfig.tiny16(num_classes=4, attention=attention), rngs=nnx.Rngs(seed))
    history = fit(model, functools.partial(shapes, batch_size=64), steps=settings["vit_steps"],
                  loss_fn=lambda m, b: cross_entropy(m(b["images"]), b["labels"]), learning_rate=3e-3, seed=seed,
                  progress=False)
    held = shapes(_held_out(seed), batch_size=4 * settings["eval_batch"])
    return _nan_to_none({"accuracy": accuracy(nnx.jit(lambda m, x: m(x))(model, held["images"]), held["labels"]),
                         "stopped_early": float(history.stopped_early is not None)})


# ---------------------------------------------------------------------------------- 7. detr
GRID, DETR_CLASSES = 8, 3


def detr(attention: AttentionConfig, seed: int, settings: dict) -> dict:
    """DETR decoder on synthetic 8x8 feature maps (the detr-queries lesson's "DETR, PE for 8x8")."""
    config = DETRConfig(feature_dim=DETR_CLASSES + 1, feature_size=GRID, encoder_layers=0, decoder_layers=2,
                        num_queries=8, num_classes=DETR_CLASSES, pe_temperature=20.0, attention=attention)
    model = DETR(config, rngs=nnx.Rngs(seed))
    sample = functools.partial(data.feature_map_detection, grid=GRID, max_objects=3, num_classes=DETR_CLASSES)

    def loss_fn(m, b):
        return detr_loss(m(b["features"]), b, num_classes=DETR_CLASSES, w_giou=0.0)[0]

    history = fit(model, functools.partial(sample, batch_size=32), steps=settings["detr_steps"], loss_fn=loss_fn,
                  learning_rate=1e-3, warmup=0.05, clip=0.1, seed=seed, progress=False)
    held = sample(_held_out(seed), batch_size=settings["eval_batch"])
    maps = capture_attention(model, held["features"])[f"decoder.{config.decoder_layers - 1}.cross_attn"]
    boxes, scores, labels = postprocess(nnx.jit(lambda m, x: m(x))(model, held["features"]), (GRID, GRID))
    valid = np.asarray(held["valid"])
    gt = np.asarray(box_cxcywh_to_xyxy(held["boxes"])) * GRID  # cells, like the predictions
    ap = coco_ap(boxes, scores, labels, [g[v] for g, v in zip(gt, valid)],
                 [lab[v] for lab, v in zip(np.asarray(held["labels"]), valid)])
    return _nan_to_none({"pair_cos": query_map_similarity(maps)["cosine"], "ap50": ap["AP50"], "ap": ap["AP"],
                         "stopped_early": float(history.stopped_early is not None)})


# ---------------------------------------------------------------------------------- 8. cost
COST_HEADS, COST_HEAD_DIM = 4, 32


def cost(attentions: dict[str, AttentionConfig], settings: dict, progress=None) -> dict:
    """Forward + backward of one causal attention layer (B=1, N=4, H=32, D=128), per variant and length.

    Each (length, variant) is compiled once, then timed `cost_repeats` times, the variants
    interleaved so that every ratio comes from the same minutes of the machine. Memory is
    XLA's temporary buffer size of the compiled step (deterministic). Returns
    {name: {"seconds@T": [times], "temp_bytes@T": bytes}}.
    """
    D = COST_HEADS * COST_HEAD_DIM
    out = {name: {} for name in attentions}
    for T in settings["cost_lengths"]:
        x = jax.random.normal(jax.random.key(T), (1, T, D))
        steps = {}
        for name, attention in attentions.items():
            layer = MultiHeadAttention(D, COST_HEADS, config=attention, rngs=nnx.Rngs(0))
            graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
            grad = jax.jit(jax.grad(lambda p, x: jnp.sum(nnx.merge(graphdef, p, rest)(x, is_causal=True) ** 2)))
            compiled = grad.lower(params, x).compile()
            jax.block_until_ready(compiled(params, x))  # warm-up
            steps[name] = (compiled, params)
            out[name][f"temp_bytes@{T}"] = int(compiled.memory_analysis().temp_size_in_bytes)
            out[name][f"seconds@{T}"] = []
            if progress is not None:
                progress()
        for _ in range(settings["cost_repeats"]):
            for name, (compiled, params) in steps.items():
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(params, x))
                out[name][f"seconds@{T}"].append(time.perf_counter() - t0)
    for name in out:
        for T in settings["cost_lengths"]:
            out[name][f"median_seconds@{T}"] = statistics.median(out[name][f"seconds@{T}"])
    return out


EXPERIMENTS = {"sinks": sinks, "dilution": dilution, "entropy": entropy, "rank": rank, "induction": induction,
               "vit": vit, "detr": detr}
"""The seeded experiments, in the order they run (cost is measured for all variants together)."""

__all__ = ["BatteryConfig", "QUICK_EXPERIMENTS", "QUICK_EXCLUDED_REASON", "EXPERIMENTS", "cost", "sinks", "dilution", "entropy", "rank",
           "induction", "vit", "detr"]
