# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Why do all my DETR queries look alike?
#
# **The complaint.** A DETR-type detector on an 8x8 backbone feature map: plot each object
# query's cross-attention map and they are all nearly the same blob. Every query looks
# everywhere, so no query can own a region, and detection is poor.
#
# **What the literature says.** DETR's object queries are slots
# that specialise to regions of the image only over long training (Carion et al. 2020;
# the maintainers in detr#178): DETR converges slowly. Its cross-attention can only tell
# cells apart through the positional encoding added to the keys (never the values), and
# queries differ only through their learned embeddings. Conditional DETR (Meng et al.
# 2021) and DAB-DETR (Liu et al. 2022) give each query an explicit reference point and
# a *spatial* attention term built from it, and report 6-10x faster convergence.
#
# **The metric.** For the last decoder layer, the head-averaged map a_q over the 64 cells
# of each of the Q queries, averaged over held-out maps:
#
# $$ \text{pair-cos} = \frac{2}{Q(Q-1)} \sum_{q<r} \cos(a_q, a_r), \qquad
#    \text{pair-JS} = \frac{2}{Q(Q-1)} \sum_{q<r} \mathrm{JS}(a_q \,\|\, a_r) \ \ (\text{max } \ln 2), $$
#
# (`tinytf.diagnostics.query_map_similarity`) next to a detection metric, **recall**: the
# share of objects found by a confident query (p >= 0.5) of the right class whose
# predicted centre is within half a cell (`tinytf.detection.centre_recall`).

# %%
from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from tinytf import plots
from tinytf.data import feature_map_detection
from tinytf.detection import centre_recall, detr_loss
from tinytf.capture import capture_attention
from tinytf.diagnostics import detr_query_report, positional_encoding_similarity
from tinytf.apps.claims import LessonResult
from tinytf.apps.lessons import main_for
from tinytf.models import DETR, DETRConfig
from tinytf.positional import sine_2d
from tinytf.train import fit, parallel_grid
from tinytf.variants import get_variant

# %% [markdown]
# ## The smallest setting: DETR's decoder on synthetic 8x8 feature maps
#
# To isolate the transformer we skip the backbone: `feature_map_detection` draws what a
# backbone would produce — 1-3 objects at distinct cells of an 8x8 grid, each cell's
# feature the one-hot code of its class (or "background") plus noise. A cell's content says
# *what* is there; *where* it is can only come from positions. The model is
# `tinytf.models.DETR` with `feature_dim` set (no backbone) and no encoder: 2 decoder
# layers (self-attention among queries, cross-attention to the cells, MLP; post-LN),
# d=64, 4 heads, 8 queries, decoder input 0 and learned query embeddings, trained with
# DETR's Hungarian-matched set loss (`tinytf.detection.detr_loss`; class + 5 L1; no GIoU:
# every box is one cell).

# %%
GRID, CLASSES, OBJECTS = 8, 3, 3
BASE = DETRConfig(feature_dim=CLASSES + 1, feature_size=GRID, encoder_layers=0, decoder_layers=2,
                  num_queries=8, num_classes=CLASSES)
BATCH, LR, WARMUP, EVERY = 32, 1e-3, 0.05, 100
CONDITIONS = {  # name -> changes to BASE
    "no positions": dict(spatial_pe="none"),
    "DETR, unnormalised PE": dict(),  # sine code on cell indices 1..8, temperature 10000 (DETR's normalize=False)
    "DETR, PE for 8x8": dict(pe_temperature=20.0),
    "conditional, PE for 8x8": dict(conditional=True, pe_temperature=20.0),
}
PLAIN = "DETR, unnormalised PE"
SYMMETRIC = {"identical queries": dict(query_init="identical")}  # trained in full mode; measured at init in quick
FULL_ONLY = {"conditional": dict(conditional=True)}  # conditional query on the unnormalised code
data = functools.partial(feature_map_detection, batch_size=BATCH, grid=GRID, max_objects=OBJECTS,
                         num_classes=CLASSES)


def loss_fn(model, batch):
    loss, metrics = detr_loss(model(batch["features"]), batch, num_classes=CLASSES, w_giou=0.0)
    return loss, {"class_accuracy": metrics["class_accuracy"]}


@nnx.jit
def forward_with_maps(model, features):
    """The model's outputs and the last decoder layer's cross-attention (B, N, Q, 64)."""
    maps = capture_attention(model, features)
    return model(features), maps[f"decoder.{model.cfg.decoder_layers - 1}.cross_attn"]


def measure(model, test) -> dict[str, float]:
    out, maps = forward_with_maps(model, test["features"])
    report = detr_query_report(maps, model.query_embed[...])  # pair-cos, pair-JS, entropy, embedding cosine
    recall = centre_recall(out, test["labels"], test["boxes"], test["valid"], tolerance=0.5 / GRID)
    return {"pair-cos": report["map_cosine"], "pair-JS": report["map_js"], "map entropy": report["map_entropy"],
            "query-embedding cos": report["query_embedding_cosine"], "recall": float(recall)}


def train(changes: dict, seed: int, steps: int, test) -> tuple[DETR, dict[int, dict[str, float]]]:
    """Train one condition; measure the held-out maps every EVERY steps (a curve per condition)."""
    model = DETR(BASE.replace(**changes), rngs=nnx.Rngs(seed))
    history = fit(model, data, steps=steps, loss_fn=loss_fn, learning_rate=LR, warmup=WARMUP, clip=0.1, seed=seed,
                  callbacks=[lambda step, m: measure(m, test)], callback_every=EVERY)
    keys = ("pair-cos", "pair-JS", "recall", "map entropy", "query-embedding cos")  # what `measure` returns
    curve = {int(s): {k: float(history[k][i]) for k in keys} for i, s in enumerate(history.steps("pair-cos"))}
    return model, curve


# %% [markdown]
# ## Three ways to get queries that all look alike
# 1. **No positions on the keys** (`spatial_pe="none"`): cells with the same content are
#    indistinguishable, so a query cannot ask for "the top-left object". The course's
#    proposal: pair-cos > 0.75 after training (we average the checkpoints from step 100
#    on: at one of seeds 0-9 the last checkpoint alone dipped to 0.745), and detection fails.
# 2. **Identical query embeddings** (`query_init="identical"`): with decoder input 0,
#    every query computes exactly the same thing: pair-cos = 1 at step 0, by symmetry. Only
#    the Hungarian matcher's tie-breaking (identical predictions are matched to different
#    objects) pushes the queries apart, slowly (trained in full mode only; in 600-step runs
#    at seeds 0-3 pair-cos was still 0.94-0.98 at the end, against 0.62-0.67 for DETR (unnormalised PE); in
#    full mode's 1500 steps it reaches ~0.72 while the embeddings stay ~0.97 alike).
# 3. **Too little training**: plain DETR with the unnormalised sine code starts with near-uniform maps
#    and after 100 steps they are still alike (proposal: pair-cos > 0.6).

# %%
def mean_cos(curve: dict, first: int, last: int) -> float:
    """Mean pair-cos over the logged steps first..last: less noisy than one checkpoint."""
    return float(np.mean([v["pair-cos"] for s, v in curve.items() if first <= s <= last]))


def claim_failures(result: LessonResult, runs: dict, quick_steps: int) -> None:
    worst = lambda c, k: max(r[quick_steps][k] for r in runs[c])  # noqa: E731
    result.claim("no_positions_maps_alike", f"no positions: pair-cos, mean over steps 100-{quick_steps}, > 0.75",
                 min(mean_cos(r, 100, quick_steps) for r in runs["no positions"]), ">", 0.75)
    result.claim("no_positions_cannot_detect", f"no positions: recall after {quick_steps} steps < 0.2",
                 worst("no positions", "recall"), "<", 0.2)
    result.claim("identical_queries_identical_maps", "identical queries: pair-cos at step 0 > 0.999 (symmetry)",
                 min(r[0]["pair-cos"] for r in runs["identical queries"]), ">", 0.999)
    if len(runs["identical queries"][0]) > 1:  # trained (full mode): reported, not claimed (see the note)
        gaps = [mean_cos(a, 100, quick_steps) - mean_cos(b, 100, quick_steps)
                for a, b in zip(runs["identical queries"], runs[PLAIN])]
        result.notes.append(f"Identical queries: mean pair-cos over steps 100-{quick_steps} above DETR's by "
                            + ", ".join(f"{g:.2f}" for g in gaps) + " (per seed). Not claimed: how fast the "
                            "matcher's tie-breaking separates them varies from seed to seed.")
    result.claim("short_training_maps_alike", "DETR (unnormalised PE): pair-cos after 100 steps > 0.6",
                 min(r[100]["pair-cos"] for r in runs[PLAIN]), ">", 0.6)


# %% [markdown]
# ## The fixes, and what each one changed
# 1. **Sine positions on the keys + learned query embeddings, trained longer** — DETR
#    itself, here with the unnormalised code (next point). The proposal: pair-cos falls by > 0.2 from step 100 to step 600,
#    and recall > 0.5, at least 0.3 above the no-position model. With the unnormalised code
#    the fall was anywhere from 0.09 to 0.25 at seeds 0-5 — slow convergence
#    is also erratic — so it is shown, not claimed; with the code for 8x8, which is closer
#    to the prototype's code, it is claimed (end point = mean of the last three checkpoints):
#    it fell by 0.19-0.39 at seeds 0-9, so the claim asks for 0.15, not the proposal's 0.2
#    (which came from two seeds and failed at one of our ten).
# 2. **A positional code that resolves the grid.** The 2-D sine code of `sine_2d` with its
#    defaults (DETR's `PositionEmbeddingSine` with normalize=False) uses temperature
#    10000 over cell coordinates 1..8: most of its 16 frequencies per axis turn by less
#    than a radian across the whole map (12 of 16: the phase step w is below 1/7 rad per
#    cell), so all cells get similar codes (mean cosine between cells 0.84 — the checklist
#    below measures it). Temperature 20 spreads the frequencies over the grid (5 of 16 are
#    that slow; mean cosine 0.58). We picked 20 from this check, not from training runs.
#    DETR itself builds the code with normalize=True: coordinates scaled to (0, 2 pi], so
#    its fastest frequency turns by 2 pi / 8 per cell on any grid: on 8x8 13 of its 16
#    frequencies are that slow and the mean cosine between cells is 0.87, a little worse
#    than the unnormalised code (the checklist measures it; it is not trained here —
#    exercise 1).
# 3. **A conditional spatial query** (Meng et al. 2021): each query owns a learned
#    reference point; its attention logit gets a separate term comparing the sine code
#    of that point with each cell's code. Here its maps are more distinct than plain DETR's with
#    the same code over the run (mean pair-cos over the checkpoints: Conditional DETR's
#    claim is about convergence speed). We do *not* assume it detects better: the
#    prototype found it did not at this budget.

# %%
def claim_fixes(result: LessonResult, runs: dict, quick_steps: int) -> None:
    T = quick_steps
    late = lambda r: mean_cos(r, T - 200, T)  # noqa: E731 — "after training": the last three checkpoints
    run_mean = lambda r: mean_cos(r, 100, T)  # noqa: E731 — "over training"
    result.claim("training_differentiates_8x8", f"DETR, PE for 8x8: pair-cos over steps {T - 200}-{T} < "
                 "pair-cos at step 100 - 0.15", max(late(r) - r[100]["pair-cos"] for r in runs["DETR, PE for 8x8"]),
                 "<", -0.15)
    result.claim("detr_detects", f"DETR (unnormalised PE): recall after {T} steps > 0.5",
                 min(r[T]["recall"] for r in runs[PLAIN]), ">", 0.5)
    result.claim("positions_needed_to_detect", "recall(DETR, unnormalised PE) - recall(no positions) > 0.3",
                 min(a[T]["recall"] - b[T]["recall"] for a, b in zip(runs[PLAIN], runs["no positions"])), ">", 0.3)
    result.claim("grid_pe_differentiates_more", f"pair-cos over steps {T - 200}-{T}: PE for 8x8 < unnormalised PE "
                 "- 0.05", max(late(a) - late(b) for a, b in zip(runs["DETR, PE for 8x8"], runs[PLAIN])), "<", -0.05)
    result.claim("conditional_differentiates_more", f"pair-cos, mean over steps 100-{T}: conditional < DETR - 0.05 "
                 "(both with PE for 8x8)", max(run_mean(a) - run_mean(b) for a, b in
                                               zip(runs["conditional, PE for 8x8"], runs["DETR, PE for 8x8"])),
                 "<", -0.05)


# %% [markdown]
# ## The checklist for *your* model
# Three questions, each one function of `tinytf.diagnostics`:
# 1. Are the query maps alike? `query_map_similarity(weights)` (or `detr_query_report`)
#    on the last decoder layer's cross-attention from `capture_attention`.
# 2. Are the query embeddings themselves distinct? `query_embedding_diversity(embed)` —
#    1.0 means every query is the same query.
# 3. Can the positional code tell the cells apart? `positional_encoding_similarity(pos, h,
#    w)`: mean cosine between cells near 1 means the code is nearly constant on your grid;
#    `sine_pe_aliasing(sine_2d_frequencies(d), spacing)` flags frequencies above Nyquist
#    (the opposite failure: coordinates normalised to [0, 1] with frequencies 2^k pi).

# %%
def pe_check(result: LessonResult) -> dict[str, np.ndarray]:
    codes = {}
    for name, temperature, normalize in (("unnormalised PE (cell index, T=10000)", 10000.0, False),
                                         ("DETR's PE (to (0, 2 pi], T=10000)", 10000.0, True),
                                         ("PE for 8x8 (cell index, T=20)", 20.0, False)):
        pos = sine_2d(GRID, GRID, BASE.d_model, temperature=temperature, normalize=normalize)
        result.metrics[name] = positional_encoding_similarity(pos, GRID, GRID)
        codes[name] = np.asarray(pos)
    return codes


# %% [markdown]
# ## Figures
# The curves of pair-cos and recall over training, per condition; the cosine between
# cell codes under the two positional codes; and the figure that started it all — a
# map, every query's predicted box and every query's attention map — for the failing
# model and for the fixed one. In the map image, cell colours are classes (red, green,
# blue) and black is background.

# %%
def queries_figure(model: DETR, test, title: str, path: Path) -> None:
    i = int(np.argmax(np.asarray(test["num_objects"]) == OBJECTS))  # the first held-out map with 3 objects
    out, maps = forward_with_maps(model, test["features"])  # the whole held-out batch: already compiled
    prob = np.asarray(jax.nn.softmax(out["logits"][i], axis=-1))[:, :-1]  # (Q, C)
    plots.detr_queries(plots.feature_map_rgb(test["features"][i]), np.asarray(maps[i].mean(0)).reshape(-1, GRID, GRID),
                       np.asarray(out["boxes"][i]), prob.argmax(-1), prob.max(-1),
                       class_names=["red", "green", "blue"], score_threshold=0.5, title=title, save=path)


# %%
def run(quick: bool = True, seed: int = 0, out_dir: str | Path = "runs/detr-queries", variant=None) -> LessonResult:
    """Train every condition (1 seed quick, 3 full), measure the maps over training, claim, draw."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quick_steps = 600
    steps = quick_steps if quick else 1500
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    conditions = dict(CONDITIONS) if quick else {**CONDITIONS, **SYMMETRIC, **FULL_ONLY}
    if variant is not None:  # a researcher's attention, in DETR with the grid-resolving code
        conditions[f"DETR + {variant}"] = dict(pe_temperature=20.0, attention=get_variant(variant))
    test = data(jax.random.key(1_000_000 + seed), batch_size=256)  # one compiled program, like every generator
    result = LessonResult()
    done = parallel_grid(lambda name, s: train(conditions[name], s, steps, test), conditions, seeds)  # one per core
    runs = {name: [curve for _, curve in done[name]] for name in conditions}
    models = {name: done[name][0][0] for name in conditions}  # the first seed's model, for the figures
    for name in conditions:
        mean = lambda at, k: float(np.mean([r[at][k] for r in runs[name]]))  # noqa: E731 — over seeds
        for at in sorted({100, quick_steps, steps}):  # every metric at the last step
            keys = runs[name][0][at] if at == steps else ("pair-cos", "pair-JS", "recall")
            result.metrics[f"{name} @ {at} steps"] = {k: mean(at, k) for k in keys}
        result.metrics[f"{name}: pair-cos by step"] = {f"step {s}": mean(s, "pair-cos") for s in sorted(runs[name][0])}
    if quick:  # the symmetry needs no training to see: measure the untrained model
        runs["identical queries"] = [{0: measure(DETR(BASE.replace(**SYMMETRIC["identical queries"]),
                                                      rngs=nnx.Rngs(s)), test)} for s in seeds]
        result.metrics["identical queries @ 0 steps"] = {k: runs["identical queries"][0][0][k]
                                                         for k in ("pair-cos", "pair-JS", "query-embedding cos")}
    claim_failures(result, runs, quick_steps)
    claim_fixes(result, runs, quick_steps)
    codes = pe_check(result)
    falls = [r[100]["pair-cos"] - r[quick_steps]["pair-cos"] for r in runs[PLAIN]]
    result.notes.append(f"DETR with the unnormalised code: pair-cos fell by {min(falls):.2f} from step 100 to {quick_steps} "
                        "(not claimed: quick mode at seeds 0-5 gave 0.09-0.25).")
    cond, detr = (result.metrics[f"{c} @ {steps} steps"]["recall"] for c in ("conditional, PE for 8x8", "DETR, PE for 8x8"))
    result.notes.append(f"Recall after {steps} steps: conditional {cond:.2f} vs plain DETR {detr:.2f} (both with the 8x8 "
                        "code): distinct maps are not the same as better detection, and no claim ranks them.")
    result.notes.append("Not reproduced: the prototype's conditional maps were distinct at once (pair-cos 0.12 at step "
                        "100). Here the spatial term starts nearly flat (pair-cos ~0.99 at step 0: its projections "
                        "start as the identity, scaled by 1/sqrt(head dim), and nearby cells have similar codes); at "
                        "step 100 it was ahead of plain DETR at some seeds and behind at others, so the claim compares the "
                        "mean over the run.")
    trained = {c: r for c, r in runs.items() if len(r[0]) > 1}
    at = sorted(runs[PLAIN][0])
    panels = {label: {c: [[r[s][key] for s in at] for r in rs] for c, rs in trained.items()} for key, label in
              (("pair-cos", "pair-cos of query maps (1 = all alike)"), ("recall", "recall (centre within half a cell)"))}
    plots.condition_panels(at, panels, titles=["Do the queries look at different places?", "Do they find the objects?"],
                           save=out_dir / "query_similarity.png")
    plots.code_similarity_maps(codes, (GRID, GRID), save=out_dir / "positional_code.png")
    queries_figure(models["no positions"], test, "Baseline: no positions on the keys — every query looks alike",
                   out_dir / "queries_baseline.png")
    queries_figure(models["conditional, PE for 8x8"], test, "Fixed: conditional spatial query + a code for 8x8",
                   out_dir / "queries_fixed.png")
    result.figures += ["query_similarity.png", "positional_code.png", "queries_baseline.png", "queries_fixed.png"]
    return result


# %% [markdown]
# ## What to take away
# - Identical query maps have distinct causes, and the checklist tells them apart: no
#   positions (maps alike *and* the position code is constant), identical queries
#   (embedding cosine 1), too little training (both fine, the maps just have not
#   specialised yet).
# - The positional code must resolve *your* grid: with temperature 10000, on 8x8 most of
#   the sine code's frequencies are wasted, whether on cell indices or, as in DETR's
#   released code, on coordinates normalised to (0, 2 pi].
# - A spatial query from a reference point makes the maps more distinct. Whether it
#   detects better at a given budget is an empirical question — measure it.
#
# **Exercises.** (1) Set `pe_normalize=True` (what DETR's released code does: coordinates scaled to (0, 2 pi]):
# what does `positional_encoding_similarity` say, and what happens to pair-cos? (2) Give
# the no-position model a learned positional embedding instead: does it recover? (3) Train
# an image DETR (`tinytf detr train --plain --steps 1000`) and run
# `detr_query_report` on it. (4) Increase the queries to 16: what happens to duplicates?
# (5) Try `pe_temperature` 5 and 100: where do the checklist and pair-cos put them?

# %% [markdown]
# ## References: what the papers report, what this toy shows
#
# - **Carion, Massa, Synnaeve, Usunier, Kirillov & Zagoruyko (2020). End-to-End Object Detection with
#   Transformers. ECCV.** DETR: a fixed set of learned object queries, Hungarian-matched set loss, sine
#   positions added to keys and queries (not values). With a ResNet-50 it reaches 42 AP on COCO, on par
#   with Faster R-CNN, but only after a long schedule (hundreds of epochs); their visualisation of the
#   prediction slots shows each query specialising to image areas and box sizes. The maintainers
#   describe queries the same way in the DETR repository (issue #178). No paper defines our pair-cos /
#   pair-JS: it is our proxy that puts a number on "the query maps look alike". Here (quick mode,
#   seed 0) DETR's pair-cos (unnormalised sine code) is ~0.89 after 100 steps and ~0.68 after 600, when recall is ~0.66.
# - **Same setting, failure by construction.** Without positions on the keys, cells with the same
#   content are indistinguishable: pair-cos stays ~0.86 over training and recall ~0.06; with identical
#   query embeddings pair-cos is exactly 1 at step 0 (quick mode, seed 0). On this 8x8 grid the sine
#   code gives neighbouring cells similar codes: mean cosine ~0.84 unnormalised (cell indices,
#   temperature 10000; the condition trained here) and ~0.87 for DETR's own normalised code (positions
#   scaled to [0, 2 pi]); a code tuned to the grid (temperature 20) lets the maps differentiate
#   further. This is our check, not a paper's.
# - **Meng et al. (2021). Conditional DETR for Fast Training Convergence. ICCV.** DETR's cross-attention
#   leans on content embeddings to find box extremities; a conditional spatial query, built from a
#   reference point's sine code and the decoder embedding and concatenated with the content part, lets
#   each head attend to one band or extremity. They report 6.7x faster convergence for R50 / R101 and
#   10x for DC5 backbones (measured as AP vs epochs); their attention maps are shown, not scored. Here
#   its maps are more distinct than DETR's over the run (pair-cos ~0.31 vs ~0.52 at 600 steps, same
#   8x8 code); its recall is similar, so no claim says it detects better.
# - **Liu et al. (2022). DAB-DETR: Dynamic Anchor Boxes are Better Queries for DETR. ICLR.** Queries
#   are explicit 4-D anchor boxes refined layer by layer, whose width and height modulate the positional
#   attention; they report 45.7 AP with a ResNet-50-DC5 backbone in 50 epochs. This lesson cites it as a
#   relative of the conditional query and does not implement its anchor updates.

# %% tags=["parameters"]
# Run settings (papermill's "parameters" cell). As a script, the command line overrides them:
# python lessons/08_detr_queries.py --quick --seed 1
quick = None    # True: quick mode (about a minute); None: full mode unless $TINYTF_QUICK=1
seed = 0
variant = None  # an attention variant: a registered name or "module:function"
out = "runs"    # each run writes a new folder runs/detr-queries/<date>-<time>_seed<seed>_<mode>/
run_dir = None  # ... or exactly this new or empty folder

# %%
if __name__ == "__main__":
    result = main_for("detr-queries", run, quick=quick, seed=seed, variant=variant, out=out, run_dir=run_dir)
