# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Train short, test long: which positions extrapolate?
#
# **Claim** (Press et al. 2022, *Train Short, Test Long*; Kazemnejad et al. 2023). A causal
# language model trained on sequences of length L is often run on longer ones. Whether it
# still works depends on how it knows where tokens are:
# - **learned** absolute positions (GPT-2) have a table of L rows: position L does not exist;
# - **sinusoidal** positions (Vaswani et al. 2017) exist at every position, but the model has
#   never seen the vectors beyond L, and its predictions degrade there;
# - **RoPE** (Su et al. 2021) only sees offsets, but offsets larger than L were never seen
#   either; the model degrades more slowly;
# - **ALiBi** (Press et al. 2022) adds -m_h |i - j| to the logits: far keys are pushed down
#   by a penalty that only grows, so a model that relies on nearby context sees the same
#   thing at any length;
# - **NoPE** (no positional encoding; a causal model can still count, Haviv et al. 2022):
#   whatever order it infers from the causal mask is calibrated to the training length.
#
# **The fix for RoPE: position interpolation** (Chen et al. 2023). To run at length L' = sL,
# multiply every position by 1/s, so that every offset the model sees lies inside the range
# it was trained on: RoPE takes real-valued positions (`AttentionConfig.rope_scale`, or
# positions passed to the model). The paper fine-tunes briefly at the new length, because
# neighbouring tokens are now 1/s apart; we do the same (a few steps at 8L), and also show
# what interpolation does without fine-tuning.
#
# **The task and the metric.** A synthetic language with a local rule: each token is
# perm(token two back) with probability 0.8, else a uniform random token (V = 16, a fixed
# random permutation perm). The best possible next-token accuracy is 0.8 + 0.2/16 = 0.81 at
# every position and every length, so any drop at longer lengths is the model's failure,
# not the task's. Metric: next-token accuracy over all positions of sequences of length
# L, 2L, 4L, 8L (L = 32), the accuracy counterpart of Press et al.'s perplexity vs length.

# %%
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf import plots
from tinytf.apps.claims import LessonResult
from tinytf.apps.lessons import main_for
from tinytf.models import CausalLM, LMConfig
from tinytf.train import accuracy, cross_entropy, fit
from tinytf.variants import get_variant

# %% [markdown]
# ## The language and the model
# `skip_gram_language` draws the sequences on the device (one `lax.scan`). The model is a
# 2-layer, 4-head causal LM (d = 64) from `tinytf.models`; only `position` differs between
# conditions, and all are trained on the same batches (same seed).

# %%
V, L, KEEP = 16, 32, 0.8
STEPS, BATCH, LR = 400, 32, 3e-3
FT_STEPS, FT_BATCH = 60, 8   # position-interpolation fine-tune at 8L
EVAL_BATCH = 64
FACTORS = (1, 2, 4, 8)
BEST = KEEP + (1 - KEEP) / V  # best achievable accuracy


def skip_gram_language(key, *, batch_size: int, length: int) -> dict:
    """x_t = perm[x_{t-2}] with probability KEEP, else uniform; perm is fixed (the 'grammar')."""
    k_start, k_noise, k_keep = jax.random.split(key, 3)
    perm = jax.random.permutation(jax.random.key(123), V)
    start = jax.random.randint(k_start, (2, batch_size), 0, V)
    noise = jax.random.randint(k_noise, (length, batch_size), 0, V)
    keep = jax.random.uniform(k_keep, (length, batch_size)) < KEEP

    def step(carry, inputs):
        two_back, one_back = carry
        fresh, kept = inputs
        x = jnp.where(kept, perm[two_back], fresh)
        return (one_back, x), x

    _, xs = jax.lax.scan(step, (start[0], start[1]), (noise, keep))
    tokens = xs.T.astype(jnp.int32)  # (B, T)
    targets = jnp.roll(tokens, -1, axis=1)  # last target wraps around: masked out
    mask = jnp.broadcast_to(jnp.arange(length) < length - 1, tokens.shape)
    return {"tokens": tokens, "targets": targets, "loss_mask": mask}


def make_loss(scale: float = 1.0):
    """Next-token cross-entropy; positions multiplied by `scale` (RoPE position interpolation)."""
    def loss_fn(model, batch):
        T = batch["tokens"].shape[1]
        logits = model(batch["tokens"], positions=None if scale == 1.0 else jnp.arange(T) * scale)
        return cross_entropy(logits, batch["targets"], batch["loss_mask"]), {}
    return loss_fn


def train(position: str, seed: int, steps: int, attention=None) -> CausalLM:
    """AdamW 3e-3 (warm-up 10 %, cosine), `steps` batches of 32 sequences of length L."""
    extra = {} if attention is None else {"attention": attention}
    config = LMConfig(vocab_size=V, d_model=64, num_layers=2, num_heads=4, max_len=8 * L, position=position, **extra)
    model = CausalLM(config, rngs=nnx.Rngs(seed))
    data = functools.partial(skip_gram_language, batch_size=BATCH, length=L)
    fit(model, data, steps=steps, loss_fn=make_loss(), learning_rate=LR, seed=seed)
    return model


def interpolate(trained: CausalLM, seed: int, steps: int, factor: int) -> CausalLM:
    """Position interpolation (Chen et al. 2023): positions x 1/factor, fine-tuned at length factor * L."""
    model = nnx.clone(trained)
    data = functools.partial(skip_gram_language, batch_size=FT_BATCH, length=factor * L)
    fit(model, data, steps=steps, loss_fn=make_loss(1 / factor), learning_rate=LR / 3, warmup=0.1,
        seed=seed + 7)
    return model


# %% [markdown]
# ## Measure
# Every model sees the same evaluation sequences at each length.

# %%
@nnx.jit(static_argnames=("scale_num",))
def _accuracy(model, batch, scale_num: float = 1.0):
    T = batch["tokens"].shape[1]
    logits = model(batch["tokens"], positions=None if scale_num == 1.0 else jnp.arange(T) * scale_num)
    return accuracy(logits, batch["targets"], batch["loss_mask"])


def evaluate(model: CausalLM, seed: int, scale_at=lambda factor: 1.0) -> np.ndarray:
    """(len(FACTORS),) accuracy at lengths factor * L; positions x scale_at(factor)."""
    out = []
    for f in FACTORS:
        batch = skip_gram_language(jax.random.key(70_000 + 97 * seed + f), batch_size=EVAL_BATCH, length=f * L)
        out.append(float(_accuracy(model, batch, scale_num=float(scale_at(f)))))
    return np.array(out)


def measure(seed: int, steps: int, variant) -> dict:
    """Train the four schemes (+ variant), interpolate RoPE; accuracy at L..8L per condition."""
    res = {}
    for name, position in (("NoPE", "none"), ("sinusoidal", "sinusoidal"), ("RoPE", "rope"), ("ALiBi", "alibi")):
        model = train(position, seed, steps)
        res[name] = evaluate(model, seed)
        if position == "rope":
            res["RoPE + PI, no fine-tune"] = evaluate(model, seed, scale_at=lambda f: 1 / f)
            pi = interpolate(model, seed, FT_STEPS, FACTORS[-1])
            res[f"RoPE + PI, {FT_STEPS} steps at {FACTORS[-1]}L"] = evaluate(pi, seed, scale_at=lambda f: 1 / f)
    if variant is not None:
        res[f"variant {variant} (RoPE)"] = evaluate(train("rope", seed, steps, get_variant(variant)), seed)
    return res


def learned_table_limit() -> str:
    """What a learned position table says when asked for position L (it has L rows)."""
    model = CausalLM(LMConfig(vocab_size=V, d_model=16, num_layers=1, num_heads=2, max_len=L), rngs=nnx.Rngs(0))
    try:
        model(jnp.zeros((1, 2 * L), jnp.int32))
    except ValueError as err:
        return str(err).split(";")[0]
    return "no error"


# %% [markdown]
# ## Reproduce, then fix
# At the training length every scheme but NoPE reaches the task's ceiling. At 8L sinusoidal
# collapses, NoPE and RoPE lose much of it, ALiBi keeps all of it. Interpolated positions
# without fine-tuning break RoPE at every longer length (neighbours are now 1/8 apart); a
# short fine-tune at 8L recovers much of it, but in this toy's budget (60 steps of 8
# sequences) it does NOT beat plain RoPE at 8L (seed 0: 0.36 vs 0.44): the claim below only
# compares fine-tuned with not fine-tuned interpolation. ALiBi is the scheme that holds.

# %%
PI = f"RoPE + PI, {FT_STEPS} steps at {FACTORS[-1]}L"


def claims(result: LessonResult, res: list[dict]) -> None:
    """Worst seed over the seeds run (min or max, whichever is harder to pass)."""
    def ratio(name, i):  # accuracy at FACTORS[i] * L / accuracy at L, per seed
        return np.array([r[name][i] / r[name][0] for r in res])

    def acc(name, i):
        return np.array([r[name][i] for r in res])

    result.claim("all_learn_at_L", "sinusoidal, RoPE and ALiBi: accuracy at L >= 0.9 x the best possible (0.81)",
                 min(acc(n, 0).min() for n in ("sinusoidal", "RoPE", "ALiBi")) / BEST, ">=", 0.9)
    result.claim("sinusoidal_collapses", "sinusoidal: accuracy at 8L / at L < 0.5", ratio("sinusoidal", 3).max(), "<", 0.5)
    result.claim("nope_degrades", "NoPE: accuracy at 8L / at L < 0.75", ratio("NoPE", 3).max(), "<", 0.75)
    result.claim("rope_degrades", "RoPE: accuracy at 8L / at L < 0.85", ratio("RoPE", 3).max(), "<", 0.85)
    result.claim("alibi_extrapolates", "ALiBi: accuracy at 8L / at L >= 0.95", ratio("ALiBi", 3).min(), ">=", 0.95)
    result.claim("pi_needs_finetune", "RoPE + PI without fine-tuning: accuracy at 2L < 0.5 x RoPE's at 2L",
                 (acc("RoPE + PI, no fine-tune", 1) / acc("RoPE", 1)).max(), "<", 0.5)
    result.claim("pi_finetune_recovers", "RoPE + PI: accuracy at 8L, fine-tuned minus not fine-tuned > 0.2",
                 (acc(PI, 3) - acc("RoPE + PI, no fine-tune", 3)).min(), ">", 0.2)


# %%
def run(quick: bool = True, seed: int = 0, out_dir: str | Path = "runs/length-generalization",
        variant=None) -> LessonResult:
    """Train at L, evaluate at L..8L, check the claims, draw the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [seed] if quick else [seed * 1000 + i for i in range(3)]
    steps = STEPS if quick else 3 * STEPS
    res = [measure(s, steps, variant) for s in seeds]
    names = list(res[0])
    result = LessonResult()
    for name in names:
        mean = np.mean([r[name] for r in res], axis=0)
        result.metrics[name] = {f"acc {f}L": float(v) for f, v in zip(FACTORS, mean)}
    claims(result, res)
    result.notes.append(f"learned positions, asked for position {L} with max_len={L}: {learned_table_limit()}")
    result.notes.append(f"best possible accuracy {BEST:.3f}; {len(seeds)} seed(s), {steps} training steps")
    file = "accuracy_vs_length.png"
    plots.length_curves([f * L for f in FACTORS], {n: np.stack([r[n] for r in res]) for n in names},
                        ylabel="next-token accuracy", train_length=L, save=out_dir / file,
                        title=f"Trained at L = {L}, tested at L..8L" + (f" (n = {len(seeds)} seeds)" if len(seeds) > 1 else ""))
    result.figures.append(file)
    return result


# %% [markdown]
# ## What to take away
# - "Relative" is not enough: RoPE sees only offsets, yet offsets longer than L are new to
#   it and its accuracy falls. ALiBi's penalty makes far keys irrelevant, so a model that
#   needs local context is unchanged at 8L.
# - Absolute positions (learned, sinusoidal) are the worst: the learned table ends at L.
# - Position interpolation squeezes long inputs into the trained range; it needs a
#   fine-tune, because it also squeezes the distance between neighbours, and on a task that
#   reads the token two back, a short one is not enough to beat plain RoPE here.
#
# ## References: what the papers report, what this toy shows
# - Press, Smith and Lewis 2022, *Train Short, Test Long: Attention with Linear Biases
#   Enables Input Length Extrapolation*, ICLR. Metric: perplexity vs evaluation length of
#   LMs trained at L; sinusoidal and rotary perplexity rises beyond L, ALiBi's stays flat
#   (WikiText-103, trained at 512/1024). Here: next-token accuracy (a proxy for their
#   perplexity, on a toy language whose best accuracy is known) at L..8L; same ordering.
# - Kazemnejad, Padhi, Natesan Ramamurthy, Das and Reddy 2023, *The Impact of Positional
#   Encoding on Length Generalization in Transformers*, NeurIPS. Metric: accuracy on
#   algorithmic tasks at lengths beyond training; they report NoPE generalising better than
#   the explicit encodings on their decoder-only tasks. Not reproduced here: on this local
#   language NoPE degrades (numbers above), the explicit schemes learn it faster.
# - Chen, Wong, Chen and Tian 2023, *Extending Context Window of Large Language Models via
#   Positional Interpolation*. Scale RoPE positions by L/L' and fine-tune briefly (they
#   report about 1000 steps to extend LLaMA to 32k); without fine-tuning it is poor. Here: 60
#   steps at 8L on the trained RoPE model, compared with no fine-tune.
# - Haviv, Ram, Press, Izsak and Levy 2022, *Transformer Language Models without Positional
#   Encodings Still Learn Positional Information*, Findings of EMNLP: why NoPE can learn at all.
# (Paper numbers quoted from memory of the abstracts: not re-verified in this session.)
#
# **Exercises.** (1) Make the rule depend on a token far back (`tinytf.data.copy_task`):
# does ALiBi still win? (2) Fine-tune PI at 2L and test at 8L. (3) Train at variable lengths.

# %% tags=["parameters"]
# Run settings (papermill's "parameters" cell). As a script, the command line overrides them:
# python lessons/11_length_generalization.py --quick --seed 1
quick = None    # True: quick mode; None: full mode unless $TINYTF_QUICK=1
seed = 0
variant = None  # an attention variant: a registered name or "module:function" (trained with RoPE)
out = "runs"    # each run writes a new folder runs/length-generalization/<date>-<time>_seed<seed>_<mode>/
run_dir = None  # ... or exactly this new or empty folder

# %%
if __name__ == "__main__":
    result = main_for("length-generalization", run, quick=quick, seed=seed, variant=variant, out=out, run_dir=run_dir)
