# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Attention sinks: where a head looks when it has nothing to do
#
# **Claim.** Trained language models put a large share of their attention on the first
# token, whatever it is — an *attention sink* (Xiao et al. 2023, *Efficient Streaming
# Language Models with Attention Sinks*). Gu et al. 2024 (*When Attention Sink Emerges in
# Language Models*) show sinks **emerge during training** and that changing the normaliser
# (sigmoid attention) or giving heads somewhere else to park (learnable key biases) removes
# them. Guo et al. 2024 (*Active-Dormant Attention Heads*) explain why on a toy task we use
# here, **Bigram-Backcopy**: a bigram chain in which, after each *trigger* token, the next
# token copies the token before the trigger. A copying head is *active* on triggers and
# *dormant* everywhere else, and softmax forces a dormant head's row to sum to one, so it
# parks the mass on BOS.
#
# Why it matters: the sink is why streaming with a sliding-window KV cache breaks unless the
# first tokens stay in the cache (StreamingLLM), and fixes like softmax₁ (Miller 2023), a
# learnable sink logit, the gated output of Qiu et al. 2025 and register tokens (Darcet et
# al. 2023) are all ways of giving the head an honest "nothing" to attend to.
#
# **The metrics.** With attention A (queries i, keys k) in head h of layer l, Gu et al.'s
# importance of key k and sink rate are
#
# $$ \alpha_k^{l,h} = \frac{1}{T-k}\sum_{i\ge k} A^{l,h}_{i,k}, \qquad
#    \text{Sink}_k^{\epsilon} = 100\cdot\operatorname{mean}_{\text{samples},l,h}\,
#    \mathbf 1\!\left[\alpha_k^{l,h} > \epsilon\right], \quad \epsilon = 0.3 .$$
#
# The active/dormant picture: **BOS mass** = mean of $A_{i,0}$ over *dormant* queries
# (non-trigger positions) versus over *trigger* queries. Normalisers whose rows need not sum to
# one leave **off-sequence mass** $1-\sum_j A_{ij}$ (the null key of softmax₁ and of the sink
# logit, sigmoid's unspent mass, or the register tokens).

# %%
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf import data, plots
from tinytf.diagnostics import eviction_report, sink_recorder, sink_report
from tinytf.apps.claims import LessonResult
from tinytf.apps.lessons import main_for
from tinytf.models import CausalLM, LMConfig, prepend_registers
from tinytf.capture import capture_attention
from tinytf.train import accuracy, cross_entropy, fit, parallel_grid
from tinytf.variants import AttentionConfig, get_variant

# %% [markdown]
# ## The smallest code: the task, the model, the loss
#
# Bigram-Backcopy from `tinytf.data` (32 ordinary tokens + BOS, triggers {1, 2, 3}, about a
# sixth of the positions are back-copies), sequences of T = 32. The model is a 2-layer,
# 4-head, d = 64 pre-LN `CausalLM` with RoPE and an MLP only 1x as wide as the model, trained
# with AdamW (lr 3e-3, weight decay 0.1, which Gu et al. find encourages sinks) on batches of
# 32 for 250 steps (quick) or 400 (full) — every condition on the same seeds and batches.
#
# Why a narrow MLP and 4 heads: with a 4x MLP and 2 heads the model can instead keep a
# previous-token head always on and gate the copy in the MLP; then, on some seeds, no sink
# forms at all. Narrowing the MLP leaves the gating to attention, where it takes a dormant head.
#
# **Registers.** `CausalLM` has no register option, so we make registers *tokens*: r extra
# token ids with learnable embeddings, prepended to every sequence (R0 R1 R2 R3 BOS x1 ...),
# with no loss on them. A register is then a learnable placeholder that the sink can move
# onto — StreamingLLM's "learnable sink token" — and the streaming code can keep it in cache.

# %%
TASK = data.make_bigram_backcopy_task(0)
SEQ_LEN, BATCH = 32, 32
STEPS = {True: 250, False: 400}  # quick, full
WINDOW = 16  # streaming cache size (half the training length)

CONDITIONS = {  # name -> attention config, number of register tokens, initial sink logit
    "softmax (baseline)": dict(attention=AttentionConfig()),
    "softmax1": dict(attention=get_variant("softmax1")),
    "sink logit": dict(attention=get_variant("sink"), sink_init=math.log(SEQ_LEN)),
    "gated output": dict(attention=get_variant("gated")),
    "sigmoid": dict(attention=get_variant("sigmoid")),
    "4 registers": dict(attention=AttentionConfig(), registers=4),
}
BASE = "softmax (baseline)"


def with_registers(batch: dict, registers: int) -> dict:
    """Prepend `registers` register tokens (ids V .. V+r-1) to every sequence; no loss on them."""
    return prepend_registers(batch, TASK.num_tokens, registers)


def make_model(spec: dict, seed: int) -> CausalLM:
    """The 2-layer, 4-head RoPE LM of one condition; a sink logit, if any, starts at spec['sink_init']."""
    config = LMConfig(vocab_size=TASK.num_tokens + spec.get("registers", 0), d_model=64, num_layers=2,
                      num_heads=4, mlp_ratio=1.0, position="rope", attention=spec["attention"], max_len=1024)
    model = CausalLM(config, rngs=nnx.Rngs(seed))
    if "sink_init" in spec:
        for block in model.blocks:
            block.attn.sink_logit[...] = jnp.full((config.num_heads,), spec["sink_init"], jnp.float32)
    return model


def loss_fn(model, batch):
    logits = model(batch["tokens"])  # (B, T, V)
    copies = batch["trigger"] & batch["loss_mask"]
    return cross_entropy(logits, batch["targets"], batch["loss_mask"]), {
        "trigger acc": accuracy(logits, batch["targets"], copies)}


evaluate = nnx.jit(loss_fn)  # the same loss on a held-out batch, as one compiled program


# %% [markdown]
# ## Measure
# `sink_report` (`tinytf.diagnostics`) captures the maps, cuts the register rows and columns
# away (their share shows up as off-sequence mass) and measures everything on the held-out
# batch. *Dormant* queries are the non-trigger positions after BOS. Uniform causal attention
# already puts ~0.1 on BOS (row i gives it 1/(i+1)), so we also follow the **active/dormant
# (AD) head**, whose dormant rows out-sink its trigger rows the most (Guo et al.), and Gu's
# rate. Table keys: `BOS dormant` / `BOS trigger` = BOS mass of those queries, `AD ...` = the
# same in the AD head, `null dormant` = off-sequence mass, `H` = entropy, `excess loss` =
# loss minus the Bayes-optimal loss.

# %%
def dormant_rows(batch: dict):
    """(B, T) bool: queries after BOS that are not back-copy triggers."""
    return ~batch["trigger"] & (jnp.arange(batch["tokens"].shape[1]) > 0)


def measure(model, registers: int, batch: dict) -> dict:
    """`sink_report` (maps, AD head, massive activations, value norms) and the task metrics."""
    b = with_registers(batch, registers)
    loss, task = evaluate(model, b)
    bayes = -float(batch["true_logprob"].sum() / batch["loss_mask"].sum())
    return {**sink_report(model, b["tokens"], dormant_rows(batch), batch["trigger"], prefix=registers,
                          active_label="trigger"),
            "excess loss": float(loss) - bayes, "trigger acc": float(task["trigger acc"])}


def train(spec: dict, seed: int, steps: int, probe: dict):
    """Train one condition; return (model, fit History with the sink curves)."""
    model, r = make_model(spec, seed), spec.get("registers", 0)
    sample = lambda key: with_registers(  # noqa: E731 -- same key, same batch, in every condition
        data.sample_bigram_backcopy(key, TASK, batch_size=BATCH, seq_len=SEQ_LEN), r)
    history = fit(model, sample, steps=steps, loss_fn=loss_fn, learning_rate=3e-3, weight_decay=0.1,
                  seed=seed, callbacks=[sink_recorder(with_registers(probe, r)["tokens"], dormant_rows(probe), prefix=r)], callback_every=steps // 5)
    return model, history


# %% [markdown]
# ## StreamingLLM: a window cache, with and without the sink
# `eviction_report` (`tinytf.diagnostics`) scores streams 4x (quick) or 8x (full) the training
# length token by token through a KV cache: *dense* keeps everything, *window* the last
# W = 16 tokens, *window + BOS* BOS and the last 15 (register models keep their registers in
# every policy; cached tokens get positions inside the cache, as in StreamingLLM). It returns
# the NLL past the training length and the dormant rows' entropy in the AD head's layer.
# Quick mode streams the baseline only (its claims are the baseline's); full mode every model.

# %%
def run_conditions(conditions: dict, seeds, steps: int, stream_len: int, streamed=None) -> dict:
    """{condition: [one dict per seed: metrics, 'history', 'nll_by_position', 'model']}; same batches for all.

    Streams only the conditions in `streamed` (default all): each cache policy of each model compiles."""
    probe, held_out, streams = (data.sample_bigram_backcopy(jax.random.key(k), TASK, batch_size=b, seq_len=t)
                                for k, b, t in ((7, 64, SEQ_LEN), (8, 256, SEQ_LEN), (9, 32, stream_len)))
    runs = {f"{name} at init": [measure(make_model(conditions[name], s), conditions[name].get("registers", 0), held_out)
                                for s in seeds] for name in (BASE, "sink logit", "4 registers") if name in conditions}
    runs = {("softmax at init" if name.startswith(BASE) else name): r for name, r in runs.items()}

    def one(name, seed) -> dict:  # one condition, one seed: train, measure, stream
        spec, r = conditions[name], conditions[name].get("registers", 0)
        model, history = train(spec, seed, steps, probe)
        m = measure(model, r, held_out)
        s, by_position = {}, {}
        if streamed is None or name in streamed:
            s, by_position = eviction_report(model, with_registers(streams, r)["tokens"], window=WINDOW,
                                             score_from=SEQ_LEN, prefix=r, layer=m["AD layer"],
                                             query_mask=~streams["trigger"])
        return {**m, **s, "history": history, "nll_by_position": by_position, "model": model}

    return {**runs, **parallel_grid(one, conditions, seeds)}  # side by side, one per core; same numbers


def per_seed(runs, name, key) -> np.ndarray:
    return np.array([r[key] for r in runs[name]])


# %% [markdown]
# ## Reproduce: the sink emerges, on dormant rows only
# At initialisation no head is a sink (rate 0). After training, the heads that do the
# back-copy attend to the previous token on triggers and park their dormant rows on BOS.
# With 2 layers x 4 heads, one head that is a sink on every sequence adds 12.5 points to
# Gu's rate: quick mode reaches 8.8-23 % at seeds 0-9 (one or two sink heads), far below
# the rates Gu et al. report for LLMs; the claim asks for >= 5 points (part of one head).

# %%
def claim_sink(result: LessonResult, runs) -> None:
    rate = per_seed(runs, BASE, "sink rate %") - per_seed(runs, "softmax at init", "sink rate %")
    result.claim("sink_emerges", "baseline: Gu sink rate Sink_1^0.3 rises by >= 5 points from init (worst seed)",
                 rate.min(), ">=", 5.0)
    dormant = per_seed(runs, BASE, "AD BOS dormant")
    ratio = dormant / np.maximum(per_seed(runs, BASE, "AD BOS trigger"), 1e-6)
    result.claim("active_on_triggers", "baseline: the AD head's dormant rows put >= 4x more mass on BOS than its "
                 "trigger rows (worst seed)", ratio.min(), ">=", 4.0)


# %% [markdown]
# ## The fixes
# - **softmax₁** (Miller 2023): an extra key with logit 0 and value 0, so rows may sum to < 1.
# - **sink logit**: the same key with a learnable logit per head (gpt-oss). Adam moves a
#   scalar by about one learning rate per step (< 1 in 400 steps), so we start it at log T,
#   where it takes half of a uniform row; from 0 (`--variant sink`) it hardly moves here.
# - **gated output** (Qiu et al. 2025): out ⊙ σ(x W_g), so a head can switch itself off.
# - **sigmoid** (Gu et al. 2024): σ(s − log n) per key, no normalisation at all.
# - **registers** (Darcet et al. 2023; StreamingLLM's learnable sink token): 4 tokens before BOS.

# %%
def claim_fixes(result: LessonResult, runs) -> None:
    base = per_seed(runs, BASE, "BOS dormant")
    rise = lambda name, key: per_seed(runs, name, key) - per_seed(runs, f"{name} at init", key)  # noqa: E731
    if "sink logit" in runs:  # its null key starts with most of each row (logit log T): compare with the baseline
        result.claim("sink_logit_fixes", "sink logit: dormant BOS mass <= 0.6x the baseline trained on the same "
                     "batches (worst seed)", (per_seed(runs, "sink logit", "BOS dormant") / base).max(), "<=", 0.6)
        result.claim("sink_logit_no_sink_heads", "sink logit: Gu sink rate <= 0.5x the baseline's (worst seed)",
                     (per_seed(runs, "sink logit", "sink rate %") / per_seed(runs, BASE, "sink rate %")).max(),
                     "<=", 0.5)
        result.claim("sink_logit_null", "sink logit: training keeps >= 0.8 of the null key's dormant share at "
                     "init (trained / untrained, worst seed)", (per_seed(runs, "sink logit", "null dormant") /
                     per_seed(runs, "sink logit at init", "null dormant")).min(), ">=", 0.8)
    if "sigmoid" in runs:  # only "lower": Gu et al.'s "no sink at all" does not hold at every seed here
        result.claim("sigmoid_lowers_bos", "sigmoid: dormant BOS mass below the baseline's (worst seed)",
                     (per_seed(runs, "sigmoid", "BOS dormant") / base).max(), "<", 1.0)
    if "4 registers" in runs:  # uniform attention already gives the 4 registers ~4x BOS's share: no ratio claim
        result.claim("sink_moves_to_registers", "registers: Gu sink rate on BOS <= 0.5x the baseline's, trained on "
                     "the same batches (worst seed)", (per_seed(runs, "4 registers", "sink rate %") /
                     per_seed(runs, BASE, "sink rate %")).max(), "<=", 0.5)
        result.claim("registers_gain_mass", "registers: training raises the dormant mass on the registers above "
                     "its uniform value at init (worst seed)", rise("4 registers", "null dormant").min(), ">", 0.0)
    fixes = [n for n in runs if n in CONDITIONS and n != BASE]
    cost = max(abs(per_seed(runs, n, "excess loss") - per_seed(runs, BASE, "excess loss")).max() for n in fixes)
    result.claim("fixes_cost_nothing", "every fix: task loss within 0.02 nats of the baseline (worst seed)",
                 cost, "<=", 0.02)
    acc = min(per_seed(runs, n, "trigger acc").min() for n in [BASE, *fixes])
    result.claim("copy_still_works", "baseline and fixes: back-copy accuracy on triggers >= 0.98", acc, ">=", 0.98)


# %% [markdown]
# ## StreamingLLM: evicting the sink
# Dense attention past the training length fails (RoPE offsets never seen in training). A
# plain window that evicts BOS costs too, but modestly at this scale: `window_needs_sink`
# measures the NLL of the window cache minus that of window + BOS on the tokens past the
# training length (0.07-0.16 nats per token at quick seeds 0-9; LLMs
# in StreamingLLM blow up to perplexities in the hundreds). Once BOS is gone, the AD head's
# layer spreads its dormant rows over recent tokens (their entropy rises), so those heads
# write a mix of token values where training only ever showed them BOS's small value.
# Keeping BOS in the cache repairs both. Why BOS, under RoPE, which encodes only relative
# offsets? The first token is still special: under the causal mask it attends only to
# itself, so its hidden state differs from every other token's (see the massive activations
# below), and here its id is always BOS. StreamingLLM found that four initial tokens of any
# content serve as sinks in LLMs; `sink_tokens=1` on a stream without its BOS tests that here.

# %%
def claim_streaming(result: LessonResult, runs) -> None:
    sink_kept = per_seed(runs, BASE, "NLL window+BOS")
    result.claim("dense_fails_beyond_length", "baseline: dense attention beyond the training length costs "
                 ">= 0.1 nats more than window + BOS (worst seed)",
                 (per_seed(runs, BASE, "NLL dense") - sink_kept).min(), ">=", 0.1)
    result.claim("window_needs_sink", "baseline: a window cache that evicts BOS costs >= 0.05 nats more than "
                 "window + BOS, 5x the prototype's effect (worst seed)",
                 per_seed(runs, BASE, "eviction cost").min(), ">=", 0.05)
    rise = per_seed(runs, BASE, "H window") - per_seed(runs, BASE, "H window+BOS")
    result.claim("eviction_spreads_attention", "baseline: evicting BOS raises the dormant-row entropy in the AD "
                 "head's layer by >= 0.1 nats (worst seed)", rise.min(), ">=", 0.1)


# %% [markdown]
# ## The mechanism in LLMs: massive activations and small sink values
# Sun et al. 2024 find that in LLMs the sink token carries a few *massive activations* (one
# hidden coordinate ~1e3-1e4x the median), its hidden-state norm far above every other
# token's, and a small value vector, so attending to it adds almost nothing.
# `massive_activations` and `value_norm_ratio` (`tinytf.diagnostics`, on `lm_states`)
# measure BOS's hidden-state norm over the median token's after each block and BOS's value
# norm over the median token's in the AD head. In this 2-layer model trained for a few
# hundred steps the sink forms **without** them: BOS's norm stays near the median token's
# (it even drops from its value at init) and its value in the AD head is not small. A
# dormant head here writes BOS's ordinary value, a constant the next layers can absorb as
# a bias; massive activations are a property of deep models trained long, not a
# precondition of the sink.

# %%
def claim_mechanism(result: LessonResult, runs) -> None:
    result.claim("no_massive_activations", "baseline: BOS's hidden-state norm stays <= 2x the median token's "
                 "after every block (Sun et al. report >= 100x in LLMs; worst seed)",
                 per_seed(runs, BASE, "BOS norm ratio").max(), "<=", 2.0)


def notes(runs) -> list[str]:
    """Plain statements of what does and does not match the papers, from this run's numbers."""
    m = lambda name, key: per_seed(runs, name, key).mean()  # noqa: E731
    fixes = [n for n in runs if n in CONDITIONS and n != BASE and "eviction cost" in runs[n][0]]
    out = [f"Sinks are moderate at this scale: baseline sink rate {m(BASE, 'sink rate %'):.0f}% and dormant BOS mass "
           f"{m(BASE, 'BOS dormant'):.2f} (uniform: {m('softmax at init', 'BOS dormant'):.2f}); Gu et al. find more in LLMs.",
           f"Evicting BOS costs {m(BASE, 'eviction cost'):.2f} nats, dense attention beyond the training length "
           f"{m(BASE, 'NLL dense') - m(BASE, 'NLL window+BOS'):.2f} nats.",
           ("Eviction cost with a fix: " + ", ".join(f"{n} {m(n, 'eviction cost'):.2f}" for n in fixes) + " nats"
            if fixes else "Quick mode streams the baseline only; full mode measures the eviction cost of every fix."),
           f"No massive activations at this scale: BOS's hidden norm / median token's {m(BASE, 'BOS norm ratio'):.2f} "
           f"(init {m('softmax at init', 'BOS norm ratio'):.2f}), value norm / median in the AD head "
           f"{m(BASE, 'BOS value ratio AD'):.2f}."]
    if "sink logit" in runs:
        out.append(f"Sink logit: BOS dormant {m('sink logit at init', 'BOS dormant'):.2f} at init -> "
                   f"{m('sink logit', 'BOS dormant'):.2f} trained (baseline {m('softmax at init', 'BOS dormant'):.2f} -> "
                   f"{m(BASE, 'BOS dormant'):.2f}); null share {m('sink logit at init', 'null dormant'):.2f} -> "
                   f"{m('sink logit', 'null dormant'):.2f}.")
    if "sigmoid" in runs:
        out.append(f"Sigmoid lowers the dormant BOS mass ({m('sigmoid', 'BOS dormant'):.2f} vs {m(BASE, 'BOS dormant'):.2f})"
                   f" but keeps a sink rate of {m('sigmoid', 'sink rate %'):.1f}% (Gu et al.: none): with no "
                   "normalisation, a head that still attends to BOS does so by choice.")
    if "gated output" in runs:
        out.append(f"Gated output: sink rate {m('gated output', 'sink rate %'):.0f}% vs {m(BASE, 'sink rate %'):.0f}% "
                   "baseline; Qiu et al.'s near-elimination needs far longer training at scale.")
    return out


# %% [markdown]
# ## Figures: maps of the baseline and the register model (triggers marked `*`), mass per
# condition, the sink forming during training, the streaming test.

# %%
def maps_figure(model, registers: int, sequence, title: str, path: Path) -> None:
    toks = with_registers({k: sequence for k in ("tokens", "targets", "loss_mask", "trigger")}, registers)["tokens"]
    names = {TASK.bos: "BOS", **{TASK.num_tokens + i: f"R{i}" for i in range(registers)}}
    labels = [names.get(t, f"{t}*" if t in TASK.triggers else str(t)) for t in np.asarray(toks[0]).tolist()]
    plots.attention_grid(capture_attention(model, toks), labels, title=title, save=path)


def conditions_figure(runs, path: Path) -> None:
    names = [n for n in runs if not n.endswith("at init")]
    bars = lambda keys, ylabel, title: ("bars", dict(ylabel=ylabel, title=title, values={  # noqa: E731
        n: {label: per_seed(runs, n, k) for k, label in keys.items()} for n in names}))
    plots.panel_row([
        bars({"BOS dormant": "on BOS, dormant queries", "BOS trigger": "on BOS, trigger queries",
              "AD BOS dormant": "on BOS, dormant, AD head", "null dormant": "off-sequence (null key / registers)"},
             "attention mass (mean over layers, heads)", "Where the attention goes"),
        bars({"sink rate %": "sink rate"}, "Gu sink rate Sink_1^0.3 (%)", "Heads that are sinks"),
        bars({"excess loss": "excess loss"}, "loss - Bayes-optimal loss (nats)", "Cost on the task")],
        suptitle="Attention sinks per condition", save=path)


def curves_figure(runs, path: Path) -> None:
    names = [n for n in runs if not n.endswith("at init")]
    steps = runs[BASE][0]["history"].steps("sink rate %")
    plots.panel_row([("curves", dict(x=steps, xlabel="training step", ylabel=label, title=label, curves={
        n: np.stack([r["history"][key] for r in runs[n]]) for n in names})) for key, label in
        (("sink rate %", "Gu sink rate Sink_1^0.3 (%)"), ("BOS dormant", "BOS mass, dormant queries"))],
        suptitle="The sink forms during training (probe batch)", figsize=(11, 4.4), save=path)


def streaming_figure(runs, path: Path) -> None:
    names = [n for n in runs if not n.endswith("at init") and "eviction cost" in runs[n][0]]
    by_position = {p: np.stack([r["nll_by_position"][p] for r in runs[BASE]]) for p in runs[BASE][0]["nll_by_position"]}
    entropy = {n: {"BOS kept": per_seed(runs, n, "H window+BOS"), "BOS evicted": per_seed(runs, n, "H window")}
               for n in names}
    plots.panel_row([
        ("curves", dict(x=np.arange(next(iter(by_position.values())).shape[1]) + 1, curves=by_position, bin=16,
                        xlabel="position in the stream", ylabel="NLL (nats, mean over 16-token bins)",
                        title=f"Baseline along the stream (cache of {WINDOW})", vline=SEQ_LEN,
                        vline_label="training length")),
        ("bars", dict(values={n: {"cost": per_seed(runs, n, "eviction cost")} for n in names},
                      ylabel="NLL(window) - NLL(window + BOS)", title="What evicting BOS costs")),
        ("bars", dict(values=entropy, ylabel="dormant-row entropy, AD layer (nats)",
                      title="Evicting BOS spreads the dormant rows"))],
        suptitle="StreamingLLM on Bigram-Backcopy: a window cache with and without the first token"
        + (" (quick mode streams the baseline only)" if len(names) == 1 else ""),
        figsize=(14, 4.8), width_ratios=[1.6, 1, 1], save=path)


def example_sequence():
    """A 16-token sequence with at least two back-copies, for the maps."""
    batch = data.sample_bigram_backcopy(jax.random.key(11), TASK, batch_size=64, seq_len=16)
    i = int(np.argmax(np.asarray(batch["trigger"][:, 2:13]).sum(1) >= 2))
    return batch["tokens"][i:i + 1]


# %%
QUICK = (BASE, "sink logit", "sigmoid", "4 registers")


def run(quick: bool = True, seed: int = 0, out_dir: str | Path = "runs/attention-sinks", variant=None) -> LessonResult:
    """Train the baseline and the fixes, measure sinks and streaming, check the claims, draw the figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conditions = {n: CONDITIONS[n] for n in (QUICK if quick else CONDITIONS)}
    if variant is not None:
        conditions[f"variant {variant}"] = dict(attention=get_variant(variant, base=AttentionConfig()))
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    runs = run_conditions(conditions, seeds, STEPS[quick], stream_len=(4 if quick else 8) * SEQ_LEN,
                          streamed=(BASE,) if quick else None)  # the streaming claims are the baseline's
    result = LessonResult()
    for name in runs:
        result.metrics[name] = {k: float(per_seed(runs, name, k).mean()) for k, v in runs[name][0].items()
                                if isinstance(v, float)}
    claim_sink(result, runs)
    claim_fixes(result, runs)
    claim_streaming(result, runs)
    claim_mechanism(result, runs)
    result.notes += notes(runs)
    sequence = example_sequence()
    base, regs = runs[BASE][0], runs["4 registers"][0]
    maps_figure(base["model"], 0, sequence, f"Softmax: dormant rows put {base['BOS dormant']:.2f} on BOS, "
                f"trigger rows {base['BOS trigger']:.2f}", out_dir / "attention_baseline.png")
    maps_figure(regs["model"], 4, sequence, f"4 registers: dormant rows put {regs['null dormant']:.2f} "
                f"on R0-R3, {regs['BOS dormant']:.2f} on BOS", out_dir / "attention_registers.png")
    conditions_figure(runs, out_dir / "sinks_per_condition.png")
    curves_figure(runs, out_dir / "sink_during_training.png")
    streaming_figure(runs, out_dir / "streaming.png")
    result.figures += ["attention_baseline.png", "attention_registers.png", "sinks_per_condition.png",
                       "sink_during_training.png", "streaming.png"]
    return result


# %% [markdown]
# ## References: what the papers report, what this toy shows
# - **Xiao, Tian, Chen, Han, Lewis 2023**, *Efficient Streaming Language Models with Attention
#   Sinks*, ICLR 2024. Metric: perplexity of long text under a window KV cache with and without
#   the first 4 tokens (paper's metric; here the NLL per token past the training length, the
#   log of the same quantity, on Bigram-Backcopy). At scale: evicting the initial tokens makes
#   perplexity explode once the text exceeds the cache (Llama-2, Falcon, Pythia, MPT); keeping
#   4 restores it (numbers not re-verified here). Here: evicting BOS costs 0.15 and 0.12 nats at
#   quick seeds 0 and 1 — positive, but small.
# - **Gu, Pang, Du, Liu, Zhang, Li, Lin 2024**, *When Attention Sink Emerges in Language
#   Models: An Empirical View*, ICLR 2025. Metric: Sink_1^ε (ε = 0.3), the share of heads whose
#   mean attention on the first token exceeds ε — used here exactly (`sink_rate`). At scale:
#   sinks emerge in pre-training after enough data; sigmoid attention without normalisation
#   and weight-decay changes move the rate (exact rates not re-verified here). Here: 12 % and
#   23 % at quick seeds 0 and 1 (8 heads: one sink head = 12.5 points).
# - **Guo, Xu, Li, Liu, Wang, Jordan, Mei 2024**, *Active-Dormant Attention Heads:
#   Mechanistically Demystifying Extreme-Token Phenomena in LLMs*, arXiv 2410.13835. The
#   Bigram-Backcopy task is theirs; the AD head is our proxy for their active/dormant
#   analysis (the head with the largest dormant-minus-active BOS mass).
# - **Sun, Chen, Kolter, Liu 2024**, *Massive Activations in Large Language Models*, COLM 2024.
#   Metric: the largest hidden activations' magnitude vs the median (they report values up to
#   ~1e4x in LLaMA2-7B, at the first token and delimiters; not re-verified here). Our
#   `massive_activations` reports the sink's norm and its largest coordinate over the median;
#   the lesson claims on the norm ratio. Here: ~1.0 (0.98 and 0.95 at seeds 0 and 1): none.
# - **Miller 2023**, *Attention Is Off By One* (blog post): softmax₁. **Qiu et al. 2025**,
#   *Gated Attention for Large Language Models*: the output gate. **Darcet, Oquab, Mairal,
#   Bojanowski 2024**, *Vision Transformers Need Registers*, ICLR 2024: register tokens (there
#   in ViTs; here as 4 learned tokens before BOS, a proxy). Sink logit: the learnable per-head
#   sink of OpenAI's gpt-oss models (2025).

# %% [markdown]
# ## What to take away
# - A head with nothing to do must still spend its softmax mass; BOS is the one key that is
#   always there, so dormant rows learn to park on it, early in training.
# - Give the head an honest "nothing" (a null key with a learnable logit, sigmoid weights,
#   register tokens) and the mass goes there instead, at no cost to the task.
# - A model trained with BOS in every window needs BOS in its cache: a plain sliding window
#   breaks, and keeping the first token repairs it (StreamingLLM). At this scale the models
#   trained with a fix still need it too (see the streaming figure and `result.notes`).
#
# **Exercises.** (1) `--variant sink` starts the sink logit at 0: how far does it move in 250
# steps, and what happens to the BOS mass? (2) Zero BOS's value vector instead of evicting it:
# how much of the eviction cost is the lost value, how much the redistributed mass? (3) Train
# with a sliding-window mask (Gu et al.: small windows prevent the sink). (4) Barbero et al.
# 2025 argue sinks prevent over-mixing: compare with the `rank-collapse` lesson.

# %% tags=["parameters"]
# Run settings (papermill's "parameters" cell). As a script, the command line overrides them:
# python lessons/06_attention_sinks.py --quick --seed 1
quick = None    # True: quick mode (about a minute); None: full mode unless $TINYTF_QUICK=1
seed = 0
variant = None  # an attention variant: a registered name or "module:function"
out = "runs"    # each run writes a new folder runs/attention-sinks/<date>-<time>_seed<seed>_<mode>/
run_dir = None  # ... or exactly this new or empty folder

# %%
if __name__ == "__main__":
    result = main_for("attention-sinks", run, quick=quick, seed=seed, variant=variant, out=out, run_dir=run_dir)
