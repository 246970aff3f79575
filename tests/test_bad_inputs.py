"""Bad input gets one clear error naming the argument, the value seen and what was expected, before any
compile or training. One row per mistake a new user makes; the CLI's flags at the end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf import attention as A
from tinytf import data, diagnostics as dg, nn, positional as P
from tinytf.apps.cli import main
from tinytf.config import enable_compilation_cache
from tinytf.models import CausalLM, LMConfig
from tinytf.train import make_optimizer, make_schedule
from tinytf.variants import AttentionConfig

q = jnp.ones((2, 5, 3, 4))
kv = jnp.ones((2, 7, 3, 4))
w = jnp.full((2, 3, 5, 5), 0.2)

CASES = [  # (what a user wrote, the call, the exception, a regex of the message)
    ("window 0", lambda: A.dot_product_attention(q, kv, kv, window=0), ValueError, r"window must be >= 1, got 0"),
    ("window -3 in a config", lambda: AttentionConfig(window=-3), ValueError, r"window must be >= 1, got -3"),
    ("a negative side of a two-sided window", lambda: A.dot_product_attention(q, kv, kv, window=(2, -1)),
     ValueError, r"window\[1\] \(right\) must be >= 0, got -1"),
    ("T = 0", lambda: A.dot_product_attention(jnp.ones((2, 0, 3, 4)), kv, kv), ValueError,
     r"at least one query and one key, got T=0"),
    ("S = 0", lambda: A.dot_product_attention(q, jnp.ones((2, 0, 3, 4)), jnp.ones((2, 0, 3, 4))), ValueError,
     r"got T=5 .* and S=0"),
    ("chunk_size 2.5", lambda: A.dot_product_attention(q, kv, kv, chunk_size=2.5), TypeError,
     r"chunk_size must be a Python int .* got float 2.5"),
    ("chunk_size 0", lambda: A.dot_product_attention(q, kv, kv, chunk_size=0), ValueError,
     r"chunk_size must be >= 1, got 0"),
    ("causal_mask(-1)", lambda: A.causal_mask(-1), ValueError, r"T must be >= 1, got -1"),
    ("a float mask", lambda: A.softmax(jnp.zeros((2, 3)), jnp.ones((2, 3))), ValueError,
     r"mask must be boolean \(True = may attend\), got dtype float32"),
    ("scale 0", lambda: A.dot_product_attention(q, kv, kv, scale=0.0), ValueError, r"scale must be a number > 0"),
    ("logit_cap -1", lambda: A.dot_product_attention(q, kv, kv, logit_cap=-1.0), ValueError,
     r"logit_cap must be a number > 0 or None, got -1.0"),
    ("causal alignment typo", lambda: A.dot_product_attention(q, kv, kv, is_causal=True, causal_alignment="top"),
     ValueError, r"causal_alignment must be one of \('bottom_right', 'top_left'\), got 'top'"),
    ("token >= vocab", lambda: CausalLM(LMConfig.micro(), rngs=nnx.Rngs(0))(jnp.full((1, 4), 40)), ValueError,
     r"tokens must be ids in \[0, vocab_size=32\), got values in \[40, 40\]"),
    ("negative token", lambda: CausalLM(LMConfig.micro(), rngs=nnx.Rngs(0))(jnp.array([[1, -1]])), ValueError,
     r"got values in \[-1, 1\]"),
    ("no tokens", lambda: CausalLM(LMConfig.micro(), rngs=nnx.Rngs(0))(jnp.zeros((1, 0), int)), ValueError,
     r"at least one position, got shape \(1, 0\)"),
    ("negative cache threshold", lambda: enable_compilation_cache(min_compile_time_s=-1.0), ValueError,
     r"min_compile_time_s must be a finite number in \[0.0, inf\), got -1.0"),
    ("sinusoidal of length 0", lambda: P.sinusoidal(0, 8), ValueError, r"length must be >= 1, got 0"),
    ("sine_2d of height 0", lambda: P.sine_2d(0, 4, 8), ValueError, r"height must be >= 1, got 0"),
    ("ALiBi with 0 heads", lambda: P.alibi_slopes(0), ValueError, r"num_heads must be >= 1, got 0"),
    ("RoPE scale 0", lambda: P.apply_rope(q, scale=0.0), ValueError, r"scale must be a number > 0, got 0.0"),
    ("0 heads", lambda: nn.MultiHeadAttention(8, 0, rngs=nnx.Rngs(0)), ValueError, r"num_heads must be >= 1, got 0"),
    ("d_model 0", lambda: nn.MultiHeadAttention(0, 2, rngs=nnx.Rngs(0)), ValueError, r"d_model must be >= 1, got 0"),
    ("MLP hidden 0", lambda: nn.MLP(8, 0, rngs=nnx.Rngs(0)), ValueError, r"hidden must be >= 1, got 0"),
    ("mlp_ratio -1", lambda: nn.Block(8, 2, mlp_ratio=-1.0, rngs=nnx.Rngs(0)), ValueError,
     r"mlp_ratio must be a finite number in \(0, inf\), got -1.0"),
    ("a position table of 0", lambda: nn.LearnedPositions(0, 8, rngs=nnx.Rngs(0)), ValueError,
     r"max_len must be >= 1, got 0"),
    ("dropout 1.0", lambda: AttentionConfig(dropout_rate=1.0), ValueError, r"dropout_rate must be a number in \[0, 1\)"),
    ("kv heads 0", lambda: AttentionConfig(num_kv_heads=0), ValueError, r"num_kv_heads must be >= 1, got 0"),
    ("rope style typo", lambda: AttentionConfig(rope_style="neox"), ValueError, r"rope_style must be one of"),
    ("learning rate NaN", lambda: make_optimizer(float("nan"), 10), ValueError, r"learning_rate must be > 0, got nan"),
    ("weight decay -1", lambda: make_optimizer(1e-3, 10, weight_decay=-1.0), ValueError,
     r"weight_decay must be a finite number in \[0.0, inf\), got -1.0"),
    ("b2 = 1", lambda: make_optimizer(1e-3, 10, b2=1.0), ValueError, r"b2 must be a finite number in \[0.0, 1.0\)"),
    ("schedule of 0 steps", lambda: make_schedule(1e-3, 0), ValueError, r"steps must be >= 1, got 0"),
    ("sink rate eps 2", lambda: dg.sink_rate(w, eps=2.0), ValueError, r"eps must be a finite number in \[0.0, 1.0\)"),
    ("sink rate eps NaN", lambda: dg.sink_rate(w, eps=float("nan")), ValueError, r"eps must be a finite number"),
    ("needle outside the map", lambda: dg.needle_mass(w, 9, 0), ValueError,
     r"query_index must be ints in \[-5, 5\) .* for weights \(2, 3, 5, 5\), got 9"),
    ("JS of different shapes", lambda: dg.js_divergence(jnp.ones(3), jnp.ones(4)), ValueError,
     r"p has shape \(3,\) and q has shape \(4,\)"),
    ("a copy task of length 0", lambda: data.copy_task(jax.random.key(0), batch_size=2, length=0, vocab_size=5),
     ValueError, r"length must be >= 1, got 0"),
    ("an int seed where a key is needed", lambda: data.copy_task(0, batch_size=2, length=4, vocab_size=5),
     TypeError, r"key must be a JAX random key"),
]


@pytest.mark.parametrize("what, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(what, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_out_of_range_tokens_under_jit_fail_loudly_without_a_host_check():
    """Inside jit nothing is checked (no host sync): an out-of-range token reads NaN, never a wrapped row,
    so training on one stops at that step with fit's NaN message."""
    from tinytf.train import cross_entropy, fit

    model = CausalLM(LMConfig.micro(), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    assert np.isfinite(np.asarray(run(state, jnp.array([[1, 2, 31, 5]])))).all()
    assert np.isnan(np.asarray(run(state, jnp.array([[1, 2, 40, 5]])))).any()
    assert np.isnan(np.asarray(run(state, jnp.array([[1, -3, 4, 5]])))).any()

    def batch(key):  # the 4th batch (step index 3) holds a token id of 32 = vocab_size
        step_bad = jax.random.key_data(key).sum() == jax.random.key_data(jax.random.fold_in(jax.random.key(0), 3)).sum()
        tokens = jax.random.randint(key, (2, 6), 0, 32)
        return tokens.at[0, 2].set(jnp.where(step_bad, 32, tokens[0, 2]))

    loss = lambda m, t: cross_entropy(m(t[:, :-1]), t[:, 1:])  # noqa: E731
    history = fit(model, batch, steps=8, loss_fn=loss, progress=False, seed=0)
    assert history.stopped_early == "nan" and history.final_step == 3 and "stopped at step 4" in history.message


CLI_CASES = [
    (["bench", "attention", "--lengths", "-5"], "argument --lengths: expected an int >= 1, got '-5'"),
    (["bench", "attention", "--heads", "0"], "argument --heads: expected an int >= 1, got '0'"),
    (["bench", "train", "--steps", "2.5"], "argument --steps: expected an int >= 1, got '2.5'"),
    (["lesson", "rank-collapse", "--seed", "-1"], "argument --seed: expected an int >= 0, got '-1'"),
    (["grade", "--timeout", "-1"], "argument --timeout: expected a number > 0, got '-1'"),
    (["grade", "--jobs", "0"], "argument --jobs: expected an int >= 1, got '0'"),
    (["detr", "train", "--eval-images", "0"], "argument --eval-images: expected an int >= 1, got '0'"),
]


@pytest.mark.parametrize("argv, message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_flags_are_checked_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["demo"], ["lesson", "rank-collapse"], ["detr", "train"]])
def test_an_unwritable_out_is_refused_before_anything_runs(command, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--out", str(blocker / "runs")])
    assert exit_info.value.code == 2
    assert "cannot be a folder" in capsys.readouterr().err and blocker.read_text() == "mine"
