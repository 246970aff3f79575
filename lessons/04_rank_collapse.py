# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Rank collapse: pure attention forgets which token is which
#
# **Claim** (Dong, Cordonnier & Loukas 2021, *Attention is not all you need: pure
# attention loses rank doubly exponentially with depth*). Stack self-attention layers
# with no skip connections and no MLPs, and every token's representation converges to
# the same vector — the matrix of token representations collapses to rank one — and it
# does so *doubly exponentially*: their bound on the residual has an exponent 3^L (an
# upper bound on the speed; below we fit the rate we actually see). Skip
# connections prevent it; MLPs only slow it down; LayerNorm plays no role.
#
# Why it matters: a transformer whose tokens all look alike cannot tell them apart any
# more. The paper argues skip connections are what keeps transformers working at depth.
#
# **The metric.** For token representations X (T tokens x D features), the relative
# residual from "all rows identical" is
#
# $$ r(X) = \frac{\lVert X - \mathbf{1}\bar x^\top \rVert_F}{\lVert X \rVert_F}, \qquad \bar x = \text{mean of the rows}. $$
#
# r = 0 means rank collapse; r = 1 means the rows average to zero. We measure it on the
# raw residual stream (`tinytf.diagnostics.rank_residual`). The Frobenius norm is our
# choice; Dong et al. use the composite norm sqrt(||M||_1 ||M||_inf) (max column sum times
# max row sum): we measure that too (`norm="l1inf"`, metrics `r_l1inf`) and it tells the
# same story. (Their residual subtracts the best x; the token mean is the Frobenius optimum
# and, for their norm, gives an upper bound.) No training is needed: the
# effect is a property of the architecture at initialisation.

# %%
from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from tinytf import plots
from tinytf.diagnostics import rank_residual, singular_values
from tinytf.apps.claims import LessonResult
from tinytf.apps.lessons import main_for
from tinytf.nn import Block

# %% [markdown]
# ## The smallest code: five kinds of block
#
# `tinytf.nn.Block` has switches for exactly this experiment: LayerNorm placement,
# residual on/off, MLP on/off. A stack of L blocks of one kind, each with its own random
# weights (lecun-normal, variance 1/fan-in), applied to Gaussian tokens X ~ N(0, 1).

# %%
BLOCKS = {  # name -> Block switches
    "pure attention": dict(norm="none", residual=False, use_mlp=False),
    "attention + LayerNorm": dict(norm="post", residual=False, use_mlp=False),
    "attention + MLP": dict(norm="none", residual=False, use_mlp=True),
    "attention + skip": dict(norm="none", residual=True, use_mlp=False),
    "full block (skip + MLP + LN)": dict(norm="pre", residual=True, use_mlp=True),
}
DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
B, T, D, HEADS = 8, 32, 64, 4


def make_stack(depth: int, switches: dict, seed: int):
    """`depth` blocks of one kind with independent random weights, stacked along a leading axis.

    One block's graph plus a (depth, ...) pytree of weights: `lax.scan` runs the stack
    and XLA compiles a single block, whatever the depth.
    """
    graphdef, _ = nnx.split(Block(D, HEADS, rngs=nnx.Rngs(0), **switches))
    keys = jax.random.split(jax.random.key(seed), depth)
    states = jax.vmap(lambda k: nnx.split(Block(D, HEADS, rngs=nnx.Rngs(k), **switches))[1])(keys)
    return graphdef, states


@partial(jax.jit, static_argnums=0)
def run_stack(graphdef, states, x):
    """Apply the stacked blocks in turn; return the representation after each: (L, B, T, D)."""
    def layer(x, state):
        x = nnx.merge(graphdef, state)(x)  # non-causal: the paper's setting
        return x, x

    return jax.lax.scan(layer, x, states)[1]


def measure(switches: dict, seed: int, query_scale: float = 1.0) -> np.ndarray:
    """(2, max(DEPTHS)): r(X_L) for L = 1..max(DEPTHS), Frobenius (row 0) and Dong et al.'s l1/l-inf (row 1)."""
    graphdef, states = make_stack(max(DEPTHS), switches, seed)
    kernel = states["attn"]["query_proj"]["kernel"]
    kernel.set_value(kernel.get_value() * query_scale)  # sharper attention: larger logits, same program
    x = jax.random.normal(jax.random.key(10_000 + seed), (B, T, D))
    xs = run_stack(graphdef, states, x)
    return np.stack([np.asarray(jax.vmap(partial(rank_residual, norm=n))(xs)) for n in ("fro", "l1inf")])


# %% [markdown]
# ## Measure
#
# Every number below is measured on fresh random stacks, over several seeds. Claims use
# the *worst* seed, so they hold for every stack we drew, not on average.

# %%
def measure_all(seeds) -> tuple[dict, dict]:
    """{block kind: (seeds, 32) residual after 1..32 layers}, Frobenius and l1/l-inf."""
    both = {name: np.stack([measure(sw, s) for s in seeds], axis=1) for name, sw in BLOCKS.items()}
    return {k: v[0] for k, v in both.items()}, {k: v[1] for k, v in both.items()}


def at(r, name, L):
    """r after L layers, one value per seed."""
    return r[name][:, L - 1]


# %% [markdown]
# ## Reproduce: pure attention collapses, faster than exponentially
# log10 r drops by a little in layer 1, more in layer 2, much more in layer 3: the
# drop itself grows (the 3^L exponent), until float32 rounding (~1e-7) stops it.
#
# And what does not help: LayerNorm rescales each token but cannot make identical
# tokens different again; the MLP acts on each token separately, so it cannot either.

# %%
def claim_collapse(result: LessonResult, r, r1) -> None:
    pure = "pure attention"
    result.claim("pure_collapses_by_3", "pure attention: r after 3 layers < 1e-4 (every seed)",
                 at(r, pure, 3).max(), "<", 1e-4)
    result.claim("pure_collapses_by_2", "pure attention: r after 2 layers < 0.1 (every seed)",
                 at(r, pure, 2).max(), "<", 0.1)
    result.claim("pure_collapses_by_3_l1inf", "pure attention, the paper's l1/l-inf norm: r after 3 layers < 1e-4 "
                 "(every seed)", at(r1, pure, 3).max(), "<", 1e-4)
    drop12 = np.log10(at(r, pure, 1)) - np.log10(at(r, pure, 2))
    drop23 = np.log10(at(r, pure, 2)) - np.log10(np.maximum(at(r, pure, 3), 1e-12))
    result.claim("doubly_exponential", "pure attention: the log10 drop in layer 3 is > 2x the drop in layer 2 "
                 "(faster than exponential; worst seed)", (drop23 / drop12).min(), ">", 2.0)
    result.claim("layernorm_does_not_fix", "attention + LayerNorm: r after 6 layers < 1e-3 (every seed)",
                 at(r, "attention + LayerNorm", 6).max(), "<", 1e-3)
    result.claim("mlp_does_not_fix", "attention + MLP: r after 4 layers < 1e-3 (every seed)",
                 at(r, "attention + MLP", 4).max(), "<", 1e-3)


# %% [markdown]
# ## How fast? Fitting the rate over more depths
# At standard initialisation pure attention hits the float32 floor after 3 layers: three
# points cannot show a rate. Sharper attention (query weights x8, larger logits) slows the
# collapse so that ~7 depths lie above the floor. If r(L) ~ exp(-c b^L) (doubly
# exponential), then log(-log r) = log c + L log b is a line in L; the paper's bound has
# b = 3 (an upper bound on the speed). Plain exponential decay r ~ rho^L would give
# log(-log r) = const + log L instead, whose straight-line fit over the same depths has a
# slope of only ~0.3 (we compute it on the depths fitted, as a control).

# %%
SHARP, FLOOR = 8.0, 1e-6  # query-weight scale; r below FLOOR is float32 rounding


def claim_rate(result: LessonResult, seeds) -> None:
    fits = []
    for s in seeds:
        r = measure(BLOCKS["pure attention"], s, query_scale=SHARP)[0]  # Frobenius
        L = np.flatnonzero((r > FLOOR) & (r < 0.99)) + 1  # depths above the floor
        y = np.log(-np.log(r[L - 1]))
        fits.append((np.polyfit(L, y, 1)[0], np.polyfit(L, np.log(L), 1)[0], len(L)))  # measured, exponential
    slope, null, n = np.array(fits).T
    result.metrics[f"rate, pure attention, W_Q x{SHARP:g}"] = {
        "slope of log(-log r) vs L (median)": float(np.median(slope)), "base b = e^slope (median)":
        float(np.exp(np.median(slope))), "bound's base": 3.0, "depths fitted (min)": float(n.min()),
        "slope if the decay were exponential (max)": float(null.max())}
    result.claim("doubly_exponential_rate", f"pure attention, W_Q x{SHARP:g}: slope of log(-log r) vs L > 0.5 on every "
                 "stack (exponential decay gives ~0.3 on the same depths; the bound, log 3 = 1.1)", slope.min(), ">", 0.5)


# %% [markdown]
# ## The fix: skip connections
# With x + attn(x) each layer keeps a copy of its input, so the residual decays slowly
# (skips alone still drift down over tens of layers); the full pre-LN block keeps
# r high at 32 layers.

# %%
def claim_fix(result: LessonResult, r) -> None:
    result.claim("skip_fixes", "attention + skip: r after 6 layers > 0.5 (every seed)",
                 at(r, "attention + skip", 6).min(), ">", 0.5)
    full = "full block (skip + MLP + LN)"
    result.claim("full_block_keeps_rank_16", "full block: r after 16 layers > 0.4 (every seed)",
                 at(r, full, 16).min(), ">", 0.4)
    result.claim("full_block_keeps_rank_32", "full block: r after 32 layers > 0.3 (every seed)",
                 at(r, full, 32).min(), ">", 0.3)


# %% [markdown]
# ## Figures
# Residual vs depth on a log axis (hollow markers sit at the float32 floor), and the
# singular-value spectrum of the tokens after 4 layers: one large value and nothing
# else is what "rank one" looks like.

# %%
def _spectrum_figure(seed: int, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    x = jax.random.normal(jax.random.key(10_000 + seed), (B, T, D))
    for name, switches in BLOCKS.items():
        xs = run_stack(*make_stack(4, switches, seed), x)  # (4, B, T, D)
        s = np.asarray(singular_values(xs[-1], normalize=True))[0]
        ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-9), marker=".", label=name)
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value / largest")
    ax.set_title("Token representations after 4 layers: singular values")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path)


def run(quick: bool = True, seed: int = 0, out_dir: str | Path = "runs/rank-collapse", variant=None) -> LessonResult:
    """Measure r vs depth for the five block kinds, check the claims, draw the figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_seeds = 3 if quick else 10
    seeds = [seed * 1000 + i for i in range(n_seeds)]
    r, r1 = measure_all(seeds)
    result = LessonResult()
    for name in BLOCKS:  # geometric mean over seeds; 1e-12 stands for "reached 0 in float32"
        result.metrics[name] = {f"r(L={L})": float(np.exp(np.log(np.maximum(at(r, name, L), 1e-12)).mean()))
                                for L in (1, 2, 3, 6, 16, 32)}
        result.metrics[name].update({f"r_l1inf(L={L})": float(np.exp(np.log(np.maximum(at(r1, name, L), 1e-12)).mean()))
                                     for L in (1, 2, 3, 6, 16, 32)})
    claim_collapse(result, r, r1)
    claim_rate(result, seeds)
    claim_fix(result, r)
    idx = [L - 1 for L in DEPTHS]
    plots.rank_vs_depth(list(DEPTHS), {name: v[:, idx] for name, v in r.items()},
                        title=f"Rank collapse: r(X) vs depth ({n_seeds} random stacks each)",
                        save=out_dir / "rank_vs_depth.png")
    _spectrum_figure(seeds[0], out_dir / "spectrum.png")
    result.figures += ["rank_vs_depth.png", "spectrum.png"]
    return result


# %% [markdown]
# ## References: what the paper reports, what this toy shows
# - **Dong, Cordonnier & Loukas (2021)**, *Attention is not all you need: pure attention
#   loses rank doubly exponentially with depth*, ICML. Metric: the residual
#   res(X) = X - 1 x^T (x chosen to make it smallest) in the composite norm
#   sqrt(||M||_1 ||M||_inf). Their theorem bounds the residual of L self-attention layers
#   (no skips, no MLPs) by a constant^((3^L - 1)/2) times the input residual to the power
#   3^L; skip connections break the bound, MLPs (through their Lipschitz constant) only
#   slow it. They also measure the relative residual in trained BERT-style models with the
#   skips removed along paths (we did not check their figures' numbers). This lesson: the
#   relative residual in the Frobenius norm (our choice) *and* in their composite norm
#   (`r_l1inf`, with the token mean for x, an upper bound on theirs), at initialisation,
#   not in trained models. Both norms agree: r after 3 pure-attention layers ~3e-7 in
#   each (quick, seed 0, 3 stacks). The rate: with sharper attention (W_Q x8, 7 depths
#   above the float32 floor) the fitted slope of log(-log r) vs L is 0.68-0.86 on all 15
#   stacks of quick seeds 0-4 (base b = 2.2-2.35; exponential decay would give 0.3):
#   doubly exponential, but slower than the bound's b = 3.

# %% [markdown]
# ## What to take away
# - Attention averages tokens; averaging again and again makes them all the same.
#   Without skips this happens within 2-3 layers at standard initialisation.
# - Skip connections are the fix; LayerNorm and MLPs are not.
# - Sharper attention (larger query/key weights) delays collapse: the paper's bound
#   depends on the logits' scale. Try it: multiply the query projection by 4.
#
# **Exercises.** (1) Make the attention causal: does the first token ever collapse onto
# the others? (2) Train a 6-layer stack with and without skips on the copy task
# (`tinytf.data`) and measure r of its outputs. (3) Barbero et al. 2025 argue attention
# sinks are a way to avoid this over-mixing — see the `attention-sinks` lesson.

# %% tags=["parameters"]
# Run settings (papermill's "parameters" cell). As a script, the command line overrides them:
# python lessons/04_rank_collapse.py --quick --seed 1
quick = None    # True: quick mode (about a minute); None: full mode unless $TINYTF_QUICK=1
seed = 0
variant = None  # an attention variant: a registered name or "module:function"
out = "runs"    # each run writes a new folder runs/rank-collapse/<date>-<time>_seed<seed>_<mode>/
run_dir = None  # ... or exactly this new or empty folder

# %%
if __name__ == "__main__":
    result = main_for("rank-collapse", run, quick=quick, seed=seed, variant=variant, out=out, run_dir=run_dir)
