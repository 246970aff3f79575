# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # What ViT attention maps can explain
#
# **Claim.** An attention map is not automatically an explanation. Jain & Wallace 2019
# (*Attention is not Explanation*) found attention weights often disagree with gradient
# and leave-one-out importance; Wiegreffe & Pinter 2019 (*Attention is not not
# Explanation*) answered that it depends on the model and the test, and that claims
# need baselines (random, uniform) and several seeds. Abnar & Zuidema 2020
# (*Quantifying Attention Flow in Transformers*) showed why one layer's map misleads:
# tokens have already mixed in the layers below. Their **attention rollout** multiplies
# the maps of all layers, with the residual path as an identity:
#
# $$ \tilde A = \prod_{l=L}^{1} \operatorname{rownorm}\!\left(\tfrac12 I + \tfrac12 \bar A_l\right), \qquad \bar A_l = \text{head mean of layer } l. $$
#
# **The test.** Does an attribution point at what the prediction depends on? Delete the
# k highest-scored patches and watch p(predicted class) fall (Samek et al. 2017):
#
# $$ \text{AOPC} = \frac1K \sum_{k=1}^{K} \big(p_0 - p_k\big), $$
#
# higher = more faithful, compared with deleting *random* patches. On synthetic shapes we
# also know the truth — the patches the shape covers — so precision@k (k = number of
# such patches) measures plausibility, and Kendall's tau measures how much two methods
# agree.

# %%
from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from tinytf import plots
from tinytf.data import SHAPE_NAMES, shapes_classification
from tinytf.capture import capture_attention
from tinytf.diagnostics import (attention_flow, attention_rollout, attribution_report, grad_times_input, norm_outliers,
                                register_attention)
from tinytf.apps.claims import LessonResult
from tinytf.apps.lessons import main_for
from tinytf.models import LinearPatchEmbed, ViT, ViTConfig, patchify, unpatchify
from tinytf.train import accuracy, cross_entropy, fit, parallel_grid
from tinytf.variants import get_variant

# %% [markdown]
# ## The smallest code: a tiny ViT on shapes among clutter
#
# 32x32 images, one coloured shape (circle, square, triangle, cross) among 4 random
# specks. 8x8 patches give a 4x4 grid: 16 patch tokens + CLS, of which the shape covers
# about a quarter — the rest is background or clutter. Two ViTs, 2 and 4 layers (4 heads,
# d=64, pre-LN), trained the same way: does depth change what one layer's map means?

# %%
DATA = dict(image_size=32, channels=3, num_classes=4, min_size=0.12, max_size=0.2, clutter=4)
CONFIGS = {"2 layers": ViTConfig.tiny16(image_size=32, patch_size=8, num_classes=4),
           "2 layers + 4 registers": ViTConfig.tiny16(image_size=32, patch_size=8, num_classes=4, num_registers=4),
           "4 layers": ViTConfig.tiny16(image_size=32, patch_size=8, num_classes=4, num_layers=4)}
STEPS, BATCH, LR, WD = 500, 64, 3e-3, 0.01
KS = np.arange(1, 9)  # delete up to half of the 16 patches
PAIRS = [("raw attention", "rollout"), ("raw attention", "|grad x input|"), ("rollout", "|grad x input|")]  # tau
FLOW_PAIRS = [("attention flow", "|grad x input|"), ("rollout", "|grad x input|"), ("attention flow", "rollout")]
FLOW_IMAGES = 64  # attention flow costs ~1 ms per (image, token): it is measured on the first 64 test images


def loss_fn(model, batch):
    logits = model(batch["images"])
    return cross_entropy(logits, batch["labels"]), {"accuracy": accuracy(logits, batch["labels"])}


def train(config: ViTConfig, seed: int) -> ViT:
    rngs = nnx.Rngs(seed)
    model = ViT(config, rngs=rngs)
    model.patch_embed = LinearPatchEmbed(config.patch_size, config.channels, config.d_model, rngs=rngs)
    data = functools.partial(shapes_classification, batch_size=BATCH, **DATA)
    fit(model, data, steps=STEPS, loss_fn=loss_fn, learning_rate=LR, weight_decay=WD, seed=seed)
    return model


# %% [markdown]
# ## Three attributions (plus a random one)
# - **raw attention**: the class token's row in the last layer, mean over heads;
# - **rollout**: the class token's row of the rollout (`attention_rollout`);
# - **|grad x input|**: gradient of the predicted logit times the patch token, summed
#   over features (`grad_times_input` on `ViT.embed` / `forward_from_embeddings`).
#
# - **attention flow** (`attention_flow`, Abnar & Zuidema's second method): the same
#   residual-augmented maps A'_l as capacities of a layered graph, node (l, t) per layer
#   and token, edge (l-1, j) -> (l, i) of capacity A'_l[i, j]; a patch's score is the
#   maximum flow from (0, patch) to (L, CLS). One max-flow per image and patch (~1 ms), so
#   it is measured on the first 64 test images, beside the other methods on those images.
#
# All are scores over the 16 patches (the CLS and register columns are dropped).

# %%
@nnx.jit
def grad_x_input(model, images):
    return grad_times_input(model.forward_from_embeddings, model.embed(images), absolute=True)  # (B, T)


@nnx.jit
def features(model, images):
    return model.features(images)  # (B, T, D) last block output, before the final norm


def attributions(model, images, maps, seed: int) -> dict[str, np.ndarray]:
    """{method: (B, P) scores over the patches}; maps = capture_attention(model, images)."""
    first = 1 + model.config.num_registers  # first patch token
    last = maps[f"blocks.{model.config.num_layers - 1}.attn"]
    return {"random": np.random.default_rng(seed).random((images.shape[0], model.config.num_patches)),
            "raw attention": np.asarray(last.mean(1)[:, 0, first:]),
            "rollout": np.asarray(attention_rollout(maps)[:, 0, first:]),
            "|grad x input|": np.asarray(grad_x_input(model, images)[:, first:])}


# %% [markdown]
# ## Deleting patches
# Deletion sets a patch's pixels to the background colour (black). The model has seen
# plenty of empty black patches, so each deleted patch is in distribution; the image
# as a whole (a shape with a piece missing) is not, which is the known limit of deletion
# tests (a never-seen MASK token would be worse). The image is
# cut into patch vectors so that `deletion_curve` can replace whole patches.

# %%
@functools.partial(nnx.jit, static_argnums=2)
def logits_from_patches(model, patches, p):
    return model(unpatchify(patches, p))


def relevant_patches(masks, p: int) -> np.ndarray:
    """(B, S, S) shape masks -> (B, P) bool: the patches the shape touches."""
    return np.asarray(patchify(masks[..., None], p).any(-1))


# %% [markdown]
# ## Measure
# For each method: the deletion curve and its AOPC, precision@k against the shape's
# patches, and Kendall tau between methods. For the register question: patch-token norms
# at the last block's output and the attention mass on CLS and on the registers.

# %%
def measure(model, test, seed: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy, AOPC / precision@k per method, Kendall tau between methods, token norms, register use."""
    cfg, images = model.config, test["images"]
    p, first = cfg.patch_size, 1 + cfg.num_registers
    logits = logits_from_patches(model, patchify(images, p), p)
    m = {"accuracy": float(accuracy(logits, test["labels"]))}
    maps = capture_attention(model, images)  # {layer: (B, N, T, T)}
    scores = attributions(model, images, maps, seed)
    relevant = relevant_patches(test["masks"], p)
    predict = functools.partial(logits_from_patches, model, p=p)
    # Attention flow (Abnar & Zuidema 2020) on the first n images; every method is re-measured on those ("subset").
    n, sub = FLOW_IMAGES, f" (first {FLOW_IMAGES})"
    scores["attention flow"] = attention_flow({k: v[:n] for k, v in maps.items()})[:, first:]  # (n, P)
    rep = attribution_report(predict, patchify(images, p), scores, KS, baseline=0.0, relevant=relevant,
                             pairs=PAIRS + FLOW_PAIRS, subset=n)
    for name, r in rep.items():
        if "aopc" in r:  # measured on every test image
            m[f"AOPC {name}"], m[f"precision@k {name}"] = r["aopc"], r["precision_at_k"]
        m[f"AOPC {name}{sub}"] = r["subset"]["aopc"]
        if name in ("raw attention", "rollout", "attention flow"):
            m[f"precision@k {name}{sub}"] = r["subset"]["precision_at_k"]
    m.update({f"tau {a} vs {b}": rep[a]["tau_vs"][b] for a, b in PAIRS})
    m.update({f"tau {a} vs {b}{sub}": rep[a]["subset"]["tau_vs"][b] for a, b in FLOW_PAIRS})
    flow = scores.pop("attention flow")
    m[f"ties in attention flow{sub}"] = float(np.mean([1 - len(np.unique(np.round(f, 5))) / f.size for f in flow]))
    # Darcet et al. 2024: high-norm outlier patch tokens at the last block's output; who attends to registers.
    patch_norms = np.linalg.norm(np.asarray(features(model, images))[:, first:], axis=-1)  # (B, P)
    outliers = norm_outliers(patch_norms)
    m["patch norm max / median"], m["share of patch tokens > 2x median norm"] = (outliers["max_over_median"],
                                                                                 outliers["outlier_share"])
    names = {"cls_to_cls": "CLS attn on CLS", "cls_to_registers": "CLS attn on registers",
             "patches_to_registers": "patch attn on registers", "patches_to_cls": "patch attn on CLS"}
    for layer in (0, cfg.num_layers - 1):
        use = register_attention(maps, cfg.num_registers, layers=[f"blocks.{layer}.attn"])[f"blocks.{layer}.attn"]
        m.update({f"layer {layer}: {names[k]}": v for k, v in use.items()})
    drops = {name: r["drops"] for name, r in rep.items() if "drops" in r}
    return m, {"drops": drops, "scores": scores, "relevant": relevant, "patch_norms": patch_norms,
               "preds": np.asarray(logits.argmax(-1)), "flow": flow}


# %% [markdown]
# ## Reproduce: at 4 layers raw attention can mislead, rollout does not
# In both models rollout and |grad x input| find the patches the prediction depends on
# (AOPC well above deleting at random), and rollout's top patches are the shape's
# (precision@k). Raw last-layer attention is a fair explanation at 2 layers. At 4 layers
# the class token's last layer may look at empty patches, which by then carry mixed-in
# information: raw attention's top patches are less often the shape's (at every seed we ran), deleting them
# hurts less than deleting rollout's, and its ranking agrees with the gradient's much
# less than rollout's does (Kendall tau: Jain & Wallace's test, Abnar & Zuidema's
# comparison). The fix is not to read one layer: rollout follows the information
# through all of them.
#
# **Attention flow** passes the same tests (measured on the first 64 test images, with
# every other method re-measured on those images): far above random deletion, its top
# patches are the shape's, and its ranking agrees with rollout's (Kendall tau 0.61-0.86
# at seeds 0-7). At 4 layers it was usually more plausible than raw attention (precision@k
# higher by 0.22-0.47) but not at seed 6, whose 4-layer model had unusually good raw
# attention (gap 0.002; rollout's AOPC edge over raw fell to 0.02 there too): so these two
# gaps are reported in the notes, not claimed, and the 4-layer flow precision claim asks
# for 0.6 (it measured 0.71-0.93 at seeds 0-7), not the 0.75 asked at 2 layers. It is *not* better
# than rollout here: its AOPC was within 0.01 of rollout's at 2 layers and 0.02-0.07 below
# at 4, and its Kendall tau with |grad x input| was below rollout's at every seed and
# depth (by 0.03-0.12) — the opposite of the ordering Abnar & Zuidema report against
# gradients on text. The gaps are small, so no claim ranks the two. At 4 layers 13-17% of
# a flow map's values are tied (several patches meet the same narrowest cut), which blunts
# its ranking.

# %%
def claims(result: LessonResult, runs: dict[str, list[dict[str, float]]]) -> None:
    """Every claim uses the worst seed run."""
    shallow, deep = runs["2 layers"], runs["4 layers"]
    for cond, rs in (("2 layers", shallow), ("4 layers", deep)):
        tag = cond.split()[0] + "L"
        for name in ("rollout", "|grad x input|"):
            result.claim(f"{tag}_aopc_{name.strip('|').split()[0]}_beats_random", f"{cond}: AOPC({name}) > "
                         "AOPC(random) + 0.2", min(r[f"AOPC {name}"] - r["AOPC random"] for r in rs), ">", 0.2)
        result.claim(f"{tag}_rollout_precision", f"{cond}: precision@k(rollout) > 0.8 (random ~0.25)",
                     min(r["precision@k rollout"] for r in rs), ">", 0.8)
        result.claim(f"{tag}_accuracy", f"{cond}: test accuracy > 0.9", min(r["accuracy"] for r in rs), ">", 0.9)
    result.claim("2L_aopc_raw_beats_random", "2 layers: AOPC(raw attention) > AOPC(random) + 0.2",
                 min(r["AOPC raw attention"] - r["AOPC random"] for r in shallow), ">", 0.2)
    # Reported, not claimed (seed-dependent; see the text above): rollout's AOPC edge and flow's precision edge
    # over raw attention at 4 layers.
    result.notes.append(
        "4 layers, reported not claimed: AOPC(rollout) - AOPC(raw) = "
        f"{min(r['AOPC rollout'] - r['AOPC raw attention'] for r in deep):.3f}; precision@k(flow) - precision@k(raw) = "
        f"{min(r[f'precision@k attention flow (first {FLOW_IMAGES})'] - r[f'precision@k raw attention (first {FLOW_IMAGES})'] for r in deep):.3f} "
        "(worst seed; both fell to about 0.02 and 0.00 at seed 6 of 0-7, where the 4-layer model's raw attention was unusually good)")
    result.claim("4L_rollout_more_plausible_than_raw", "4 layers: precision@k(rollout) > precision@k(raw) + 0.2",
                 min(r["precision@k rollout"] - r["precision@k raw attention"] for r in deep), ">", 0.2)
    n = FLOW_IMAGES  # attention flow: the same tests, on the first n test images, with every method on them
    flow = lambda r, k: r[f"{k} attention flow (first {n})"]  # noqa: E731
    for cond, rs in (("2 layers", shallow), ("4 layers", deep)):
        tag = cond.split()[0] + "L"
        result.claim(f"{tag}_aopc_flow_beats_random", f"{cond}: AOPC(attention flow) > AOPC(random) + 0.2 (first {n} "
                     "images)", min(flow(r, "AOPC") - r[f"AOPC random (first {n})"] for r in rs), ">", 0.2)
        bar = 0.75 if tag == "2L" else 0.6  # 4 layers: 0.71-0.93 at seeds 0-7 (0.706 at seed 6), so 0.6, said in the text
        result.claim(f"{tag}_flow_precision", f"{cond}: precision@k(attention flow) > {bar} (random ~0.25; first {n})",
                     min(flow(r, "precision@k") for r in rs), ">", bar)
        result.claim(f"{tag}_flow_agrees_with_rollout", f"{cond}: Kendall tau(attention flow, rollout) > 0.5 "
                     f"(first {n})", min(r[f"tau attention flow vs rollout (first {n})"] for r in rs), ">", 0.5)
    result.claim("4L_rollout_agrees_with_gradient", "4 layers: Kendall tau(rollout, |grad x input|) > "
                 "tau(raw attention, |grad x input|) + 0.1", min(r["tau rollout vs |grad x input|"]
                 - r["tau raw attention vs |grad x input|"] for r in deep), ">", 0.1)


# %% [markdown]
# ## Registers (Darcet et al. 2024, *Vision Transformers Need Registers*)
# Large ViTs (DINOv2, DeiT-III, OpenCLIP) grow a few *high-norm* patch tokens (~2%) on
# background patches, which hold global information and spoil the attention maps; a few
# extra learned tokens with no loss — registers — take over that role and the artefacts
# go. The same ViT with 4 registers (`ViTConfig(num_registers=4)`) lets us look for both
# effects: patch-token norm outliers at the last block's output, and attention paid to
# the registers. At this scale the prediction is that neither appears. This runs in full
# mode (`quick=False`), where the notes give what we measured.

# %%
def register_notes(result: LessonResult) -> None:
    plain, regs = result.metrics["2 layers"], result.metrics["2 layers + 4 registers"]
    share = "share of patch tokens > 2x median norm"
    found = "no" if max(plain[share], regs[share]) < 0.01 else "some"
    ratio = "patch norm max / median"
    result.notes.append(
        f"Registers: {found} high-norm outlier tokens at this scale (share of patch tokens above 2x the median "
        f"norm {plain[share]:.3f} without registers, {regs[share]:.3f} with; max/median {plain[ratio]:.2f} vs "
        f"{regs[ratio]:.2f}); Darcet et al. report them in large, long-trained ViTs.")
    first, last = "layer 0: ", f"layer {CONFIGS['2 layers'].num_layers - 1}: "
    result.notes.append(
        f"Attention to the 4 registers (uniform share 4/21 = 0.19): layer 0 CLS "
        f"{regs[first + 'CLS attn on registers']:.2f}, patches {regs[first + 'patch attn on registers']:.2f}; "
        f"last layer CLS {regs[last + 'CLS attn on registers']:.2f}. Do registers make raw attention maps cleaner "
        f"(Darcet et al.)? precision@k of raw attention {plain['precision@k raw attention']:.2f} without vs "
        f"{regs['precision@k raw attention']:.2f} with registers.")


# %% [markdown]
# ## Figures
# For each model: the three attributions on test images (the shape's patches outlined)
# and the deletion curves; the rollout on one image; in full mode the register measurements.

# %%
def run(quick: bool = True, seed: int = 0, out_dir: str | Path = "runs/vit-attention", variant=None) -> LessonResult:
    """Train 2- and 4-layer ViTs (1 seed quick; 3 seeds and the register model full), measure, claim, draw."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    conditions = ["2 layers", "4 layers"] + ([] if quick else ["2 layers + 4 registers"])
    configs = dict(CONFIGS)
    if variant is not None:  # the researcher's attention in the deep model, measured like the others (no claims)
        configs[f"4 layers + {variant}"] = CONFIGS["4 layers"].replace(attention=get_variant(variant))
        conditions.append(f"4 layers + {variant}")
    sample = functools.partial(shapes_classification, batch_size=256 if quick else 1000, **DATA)
    test = sample(jax.random.key(10_000 + seed))
    result = LessonResult()
    done = parallel_grid(lambda cond, s: measure(train(configs[cond], s), test, s), conditions, seeds)  # one per core
    runs = {cond: [m for m, _ in done[cond]] for cond in conditions}
    extras = {cond: [extra for _, extra in done[cond]] for cond in conditions}
    for cond in conditions:
        result.metrics[cond] = {k: float(np.mean([r[k] for r in runs[cond]])) for k in runs[cond][0]}
    claims(result, runs)
    if variant is not None:
        v, d = result.metrics[f"4 layers + {variant}"], result.metrics["4 layers"]
        result.notes.append(f"Variant {variant} (4 layers, not claimed): accuracy {v['accuracy']:.3f} (softmax "
                            f"{d['accuracy']:.3f}); AOPC raw {v['AOPC raw attention']:.3f} / rollout "
                            f"{v['AOPC rollout']:.3f} / random {v['AOPC random']:.3f}; precision@k raw "
                            f"{v['precision@k raw attention']:.2f}, rollout {v['precision@k rollout']:.2f}.")
    for cond in ("2 layers", "4 layers"):
        m = result.metrics[cond]
        tau = m["tau raw attention vs |grad x input|"]
        verdict = ("weak agreement, as Jain & Wallace found" if tau < 0.3 else "moderate agreement: Jain & Wallace's "
                   "'attention is uncorrelated with gradient importance' does not hold here")
        result.notes.append(f"{cond}: Kendall tau(raw attention, |grad x input|) = {tau:.2f}, {verdict}; AOPC raw "
                            f"{m['AOPC raw attention']:.3f}, rollout {m['AOPC rollout']:.3f}, grad x input "
                            f"{m['AOPC |grad x input|']:.3f}, random {m['AOPC random']:.3f}.")
    for cond in ("2 layers", "4 layers"):
        m, sub = result.metrics[cond], f" (first {FLOW_IMAGES})"
        result.notes.append(f"{cond}, attention flow vs rollout on the first {FLOW_IMAGES} test images (not claimed): "
                            f"AOPC {m['AOPC attention flow' + sub]:.3f} vs {m['AOPC rollout' + sub]:.3f}, precision@k "
                            f"{m['precision@k attention flow' + sub]:.2f} vs {m['precision@k rollout' + sub]:.2f}, tau "
                            f"with |grad x input| {m['tau attention flow vs |grad x input|' + sub]:.2f} vs "
                            f"{m['tau rollout vs |grad x input|' + sub]:.2f}; share of tied flow values "
                            f"{m['ties in attention flow' + sub]:.2f}.")
    raw_p = [result.metrics[c]["precision@k raw attention"] for c in ("2 layers", "4 layers")]
    result.notes.append(
        f"Not claimed: that raw attention's precision@k falls with depth (here {raw_p[0]:.2f} at 2 layers, "
        f"{raw_p[1]:.2f} at 4; the margin was thin at seeds 0-3 and failed on one of them with 400 steps); an AOPC "
        "ranking of rollout over raw attention at 2 layers (gap below 0.05 at some of seeds 0-3); the proposal's "
        "absolute tau(raw, grad x input) < 0.3 at 4 layers (at the threshold on one of seeds 0-3, so the claim "
        "compares with rollout instead); any ranking of grad x input against the others.")
    for cond in ("2 layers", "4 layers"):
        name = cond.replace(" ", "")
        first = extras[cond][0]
        labels = [f"{SHAPE_NAMES[int(y)]} (predicted {SHAPE_NAMES[int(p)]})" for y, p in zip(test["labels"], first["preds"])]
        shown = {**{k: v for k, v in first["scores"].items() if k != "random"}, "attention flow": first["flow"]}
        plots.attribution_maps(test["images"], shown,
                               CONFIGS[cond].grid, relevant=first["relevant"], row_labels=labels[:4],
                               title=f"{cond}: which patches does each method point at? (cyan: patches the shape "
                               "covers)", save=out_dir / f"attributions_{name}.png")
        curves = {k: np.stack([e["drops"][k] for e in extras[cond]]) for k in first["drops"]}
        plots.deletion_curves(KS, curves, title=f"Deleting the top-k patches of each attribution ({cond})",
                              save=out_dir / f"deletion_{name}.png")
        result.figures += [f"attributions_{name}.png", f"deletion_{name}.png"]
    roll = extras["4 layers"][0]["scores"]["rollout"][0]
    plots.attention_on_image(test["images"][0], roll / roll.sum(), title="Attention rollout of the class token "
                             "(4 layers)", save=out_dir / "rollout_example.png")
    result.figures.append("rollout_example.png")
    if not quick:
        reg = "2 layers + 4 registers"
        outliers = max(r["share of patch tokens > 2x median norm"] for c in ("2 layers", reg) for r in runs[c])
        result.claim("no_high_norm_tokens_at_toy_scale", "no Darcet-style high-norm tokens at this scale: share of "
                     "patch tokens with norm > 2x the median < 0.01, with and without registers", outliers, "<", 0.01)
        register_notes(result)
        bars = {"CLS attn on CLS": "CLS -> CLS", "patch attn on CLS": "patches -> CLS",
                "CLS attn on registers": "CLS -> registers", "patch attn on registers": "patches -> registers"}
        plots.register_use({c: np.concatenate([e["patch_norms"] for e in extras[c]]) for c in ("2 layers", reg)},
                           {f"{c}, layer {i}": {v: result.metrics[c][f"layer {i}: {k}"] for k, v in bars.items()}
                            for c in ("2 layers", reg) for i in (0, 1)}, uniform=4 / 21, save=out_dir / "registers.png")
        result.figures.append("registers.png")
    else:
        result.notes.append("Registers (Darcet et al.) are measured in full mode (quick=False).")
    return result


# %% [markdown]
# ## References: what the papers report, what this toy shows
# - **Jain & Wallace 2019**, *Attention is not Explanation*, NAACL. Metric: Kendall tau
#   between attention weights and gradient / leave-one-out importance of the input tokens
#   (their definition; our gradient measure is |grad x input| summed over a patch token's
#   features, a proxy for their gradient importance). They report weak agreement for
#   recurrent text classifiers with attention (their per-dataset numbers not re-checked
#   here). Toy, quick seed 0: tau(raw attention, |grad x input|) 0.43 at 2 layers, 0.04 at
#   4 layers; rollout's tau with the gradient 0.52 / 0.51.
# - **Wiegreffe & Pinter 2019**, *Attention is not not Explanation*, EMNLP-IJCNLP. No new
#   metric: they ask for baselines (uniform, random) and several seeds before calling
#   attention an explanation. Here every AOPC claim is against deleting random patches, and
#   every claim takes the worst seed run.
# - **Samek et al. 2017**, *Evaluating the visualization of what a deep neural network has
#   learned*, IEEE TNNLS. Metric: AOPC, the mean drop of the class score as the most
#   relevant regions are perturbed first (their definition, with whole 8x8 patches set to
#   the black background as the perturbation and p(predicted class) as the score). Toy, seed
#   0: AOPC rollout 0.70 / 0.68 (2 / 4 layers), random 0.28 / 0.26.
# - **Abnar & Zuidema 2020**, *Quantifying Attention Flow in Transformers*, ACL. Rollout and
#   attention flow, both on the residual-augmented maps (our `attention_rollout`,
#   `attention_flow`, the paper's definitions; flow is left unnormalised, which changes no
#   ranking). Their test is the rank correlation of each method with blank-out (ablation)
#   scores and with input gradients, on small text Transformers; the abstract reports that
#   both correlate better than raw attention (the per-layer numbers of their tables were not
#   re-checked here). Our proxies: deletion AOPC (ablation), Kendall tau with |grad x input|
#   and precision@k against the shape's patches. Toy, seed 0, first 64 test images: flow
#   AOPC 0.68 / 0.64 (rollout 0.69 / 0.67), precision@k 0.90 / 0.88 (rollout 0.89 / 0.93),
#   tau with the gradient 0.45 / 0.47 (rollout 0.52 / 0.50): flow and rollout agree (tau
#   0.76 / 0.73), and neither ranks above the other here.
# - **Darcet et al. 2024**, *Vision Transformers Need Registers*, ICLR. Metric: the norm of
#   the output patch tokens; large ViTs (DINOv2, DeiT-III, OpenCLIP) grow a small share of
#   outliers with norms far above the rest on background patches, which registers remove
#   (their exact shares and norm thresholds not re-checked here). Our proxy: the share of
#   patch tokens above twice the median norm, measured in full mode only.

# %% [markdown]
# ## What to take away
# - Test an attribution by intervening (deletion) against a random baseline, and on data
#   where the truth is known (precision@k) — never by how convincing the picture looks.
# - Whether raw attention "explains" depends on the model: fine at 2 layers, misleading
#   at 4 — Jain & Wallace and Wiegreffe & Pinter are both right, for different models.
#   Rollout stays faithful and plausible at both depths.
# - Registers and high-norm artefacts are a large-model phenomenon: a tiny ViT has
#   nothing to show (run `quick=False`), and saying so is part of the result.
#
# **Exercises.** (1) Replace deletion by *insertion* (start from a blank image, add the
# top-k patches): do the rankings change? (2) Average |grad x input| over noisy copies
# of the image (SmoothGrad). (3) Train 6 layers and plot precision@k of raw attention
# per layer.

# %% tags=["parameters"]
# Run settings (papermill's "parameters" cell). As a script, the command line overrides them:
# python lessons/09_vit_attention.py --quick --seed 1
quick = None    # True: quick mode (about a minute); None: full mode unless $TINYTF_QUICK=1
seed = 0
variant = None  # an attention variant: a registered name or "module:function"
out = "runs"    # each run writes a new folder runs/vit-attention/<date>-<time>_seed<seed>_<mode>/
run_dir = None  # ... or exactly this new or empty folder

# %%
if __name__ == "__main__":
    result = main_for("vit-attention", run, quick=quick, seed=seed, variant=variant, out=out, run_dir=run_dir)
