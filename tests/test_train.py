"""Tests for tinytf.train: losses, optimizer, and the fit loop (determinism, resume, NaN stop).

The models here are tiny hand-written nnx modules (a regression MLP with an extra
non-Param gate and a call counter), so the tests do not depend on tinytf.models.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tinytf.apps.bench_train import (_attention_seconds, _dots_gflops, _step_attention, _step_dots,
                                     _step_costs, benchmark_fit_vs_nnx_jit)
from tinytf.train import (History, accuracy, cross_entropy, fit,
                          make_optimizer, make_schedule)

# ------------------------------------------------------------------- a tiny task


class Gate(nnx.Variable):
    """A non-Param variable on the gradient path (like tinytf's HeadGate)."""


class Counter(nnx.Variable):
    """A non-Param variable the forward pass writes to (like BatchNorm statistics)."""


class TinyMLP(nnx.Module):
    def __init__(self, d_in=5, hidden=7, *, rngs):
        self.l1 = nnx.Linear(d_in, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 1, rngs=rngs)
        self.gate = Gate(jnp.ones((hidden,)))
        self.calls = Counter(jnp.zeros((), jnp.int32))
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # RNG state (typed keys) in the non-Param state

    def __call__(self, x):  # (B, d_in) -> (B,)
        self.calls[...] = self.calls[...] + 1
        return self.l2(self.drop(jnp.tanh(self.l1(x)) * self.gate[...]))[:, 0]


W_TRUE = jnp.array([0.5, -1.0, 0.25, 2.0, -0.75])


def data(key):
    x = jax.random.normal(key, (11, 5))  # (B=11, 5)
    return x, jnp.tanh(x @ W_TRUE)


def loss_fn(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def make_model(seed=0):
    return TinyMLP(rngs=nnx.Rngs(seed))


def params_of(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------ losses


def test_cross_entropy_and_accuracy_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32)  # (B, T, V)
    labels = rng.integers(0, 11, size=(3, 7))
    mask = rng.random((3, 7)) > 0.4
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]  # (B, T)
    np.testing.assert_allclose(cross_entropy(logits, labels), nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(cross_entropy(logits, labels, mask), nll[mask].mean(), rtol=1e-5)
    hits = logits.argmax(-1) == labels
    np.testing.assert_allclose(accuracy(logits, labels, mask), hits[mask].mean(), rtol=1e-6)
    empty = np.zeros((3, 7), bool)
    assert float(cross_entropy(logits, labels, empty)) == 0.0  # an empty mask gives 0, not NaN
    with pytest.raises(ValueError, match=r"labels have shape \(3, 5\)"):
        cross_entropy(logits, labels[:, :5])
    with pytest.raises(ValueError, match="mask has shape"):
        accuracy(logits, labels, mask[:, :3])


# --------------------------------------------------------------------- optimizer


def test_schedule_is_linear_warmup_then_cosine():
    sched = make_schedule(1.0, 100, warmup=0.1, end_fraction=0.01)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(sched(5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 1.0, rtol=1e-6)
    t = (55 - 10) / 90  # halfway through the decay: cos = 0
    np.testing.assert_allclose(sched(55), 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t)), rtol=1e-5)
    np.testing.assert_allclose(sched(100), 0.01, rtol=1e-5)
    # an int warmup is a number of steps
    np.testing.assert_allclose(make_schedule(1.0, 100, warmup=20)(10), 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match=r"warmup=1.5 as a fraction"):
        make_schedule(1.0, 100, warmup=1.5)
    with pytest.raises(ValueError, match=r"warmup=300 gives 300 warmup steps"):
        make_schedule(1.0, 100, warmup=300)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make_schedule(0.0, 100)


def test_weight_decay_skips_biases_and_norm_scales():
    params = {"kernel": jnp.ones((3, 5)), "bias": jnp.ones((5,)), "scale": jnp.ones((5,))}
    tx = make_optimizer(0.1, 10, warmup=0, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((3, 5)), rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)
    np.testing.assert_array_equal(updates["scale"], 0.0)


def test_clipping_is_global_norm_before_adamw():
    params = {"w": jnp.zeros((3,)), "b": jnp.zeros((5,))}
    g1 = {"w": jnp.array([30.0, 40.0, 0.0]), "b": jnp.full((5,), 0.1)}  # global norm ~50
    g2 = {"w": jnp.array([0.1, -0.2, 0.3]), "b": jnp.full((5,), -0.1)}

    def two_updates(tx):
        state = tx.init(params)
        _, state = tx.update(g1, state, params)
        return tx.update(g2, state, params)[0]

    ours = two_updates(make_optimizer(0.1, 10, warmup=0, clip=1.0))
    sched = make_schedule(0.1, 10, warmup=0)
    oracle = two_updates(optax.chain(optax.clip_by_global_norm(1.0),
                                     optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=0.0)))
    unclipped = two_updates(make_optimizer(0.1, 10, warmup=0, clip=None))
    for k in params:
        np.testing.assert_allclose(ours[k], oracle[k], rtol=1e-6)
    assert not np.allclose(ours["w"], unclipped["w"], rtol=1e-3)
    with pytest.raises(ValueError, match=r"clip must be a finite number in \[0.0, inf\), got -1.0"):
        make_optimizer(0.1, 10, clip=-1.0)


# --------------------------------------------------------------------------- fit


def test_fit_decreases_loss_and_logs_learning_rate():
    x = jax.random.normal(jax.random.key(123), (257, 5))  # a fixed held-out set
    held_out = (x, jnp.tanh(x @ W_TRUE))
    model = make_model()
    history = fit(model, data, steps=100, loss_fn=loss_fn, learning_rate=3e-2, progress=False,
                  eval_fn=lambda m: {"mse": loss_fn(m, held_out)})
    assert history.steps("loss").tolist() == list(range(1, 101))
    assert history.steps("eval/mse").tolist() == [0, 100]
    start, end = history["eval/mse"]
    assert end < 0.5 * start
    sched = make_schedule(3e-2, 100, warmup=0.1)  # step s uses the rate of update s-1
    np.testing.assert_allclose(history["learning_rate"], [sched(s - 1) for s in range(1, 101)],
                               rtol=1e-5, atol=1e-8)
    assert np.all(np.isfinite(history["grad_norm"])) and history.stopped_early is None
    assert history.final_step == 100 and history.steps_per_s > 0 and history.compile_time_s > 0
    # the trained parameters are in the model object itself
    np.testing.assert_allclose(float(loss_fn(model, held_out)), end, rtol=1e-6)


def test_same_seed_is_bit_identical_and_chunking_does_not_matter():
    runs = {}
    for name, seed, per_call in (("a", 0, None), ("b", 0, 3), ("c", 0, 7), ("d", 1, None)):
        model = make_model()
        fit(model, data, steps=20, loss_fn=loss_fn, seed=seed, steps_per_call=per_call,
            progress=False)
        runs[name] = params_of(model)
    assert_identical(runs["a"], runs["b"])
    assert_identical(runs["a"], runs["c"])
    assert any(not np.array_equal(x, y) for x, y in zip(runs["a"], runs["d"]))


def test_fit_traces_the_step_once():
    """The output buffers' shapes and the loop body come from one trace of the step (loss,
    backward pass, update and hook): tracing is a large part of a small model's time to its
    first step. Host batches and chunked calls (steps_per_call) trace nothing more."""
    traced = {"loss": 0, "hook": 0}

    def counted_loss(model, batch):
        traced["loss"] += 1
        err = model(batch[0]) - batch[1]
        return jnp.mean(err ** 2), {"max_abs_err": jnp.max(jnp.abs(err))}

    def counted_hook(model, outputs):
        traced["hook"] += 1

    for source in (data, [data(jax.random.key(i)) for i in range(10)]):
        traced.update(loss=0, hook=0)
        history = fit(make_model(), source, steps=10, loss_fn=counted_loss, post_update=counted_hook,
                      steps_per_call=4, progress=False)
        assert traced == {"loss": 1, "hook": 1}
        assert history.steps("max_abs_err").tolist() == list(range(1, 11))


def test_fit_never_donates_an_array_the_caller_can_see():
    """fit donates its own copy of the state to every device call: the model's arrays from
    before fit and those a callback kept stay alive, each with the values of its step."""
    model = make_model()
    before = model.l2.kernel[...]
    kept = {}
    fit(model, data, steps=9, loss_fn=loss_fn, progress=False, callback_every=3,
        callbacks=[lambda step, m: kept.update({step: m.l2.kernel[...]})])
    assert sorted(kept) == [0, 3, 6, 9]
    assert not before.is_deleted() and not any(a.is_deleted() for a in kept.values())
    np.testing.assert_array_equal(kept[0], before)  # step 0: the untrained values
    np.testing.assert_array_equal(kept[9], model.l2.kernel[...])
    assert not np.array_equal(kept[3], kept[6])  # copies of their own step, not views of the live state


def test_non_param_variables_pass_through_untouched_by_optimizer():
    model = make_model()
    before = np.asarray(model.l1.kernel[...])
    history = fit(model, data, steps=13, loss_fn=loss_fn, weight_decay=0.1, progress=False,
                  eval_fn=lambda m: {"calls": m.calls[...]})
    np.testing.assert_array_equal(model.gate[...], np.ones(7))  # on the gradient path, not trained
    assert int(model.calls[...]) == 13  # the forward pass's writes are carried step to step
    assert not np.array_equal(model.l1.kernel[...], before)
    # eval_fn saw the model at step 0 and 13; its own call did not leak into training
    assert history["eval/calls"].tolist() == [0, 13]


def test_wrt_filter_trains_only_the_selected_params():
    model = make_model()
    l1_before, l2_before = np.asarray(model.l1.kernel[...]), np.asarray(model.l2.kernel[...])
    fit(model, data, steps=5, loss_fn=loss_fn, wrt=nnx.All(nnx.Param, nnx.PathContains("l2")),
        progress=False)
    np.testing.assert_array_equal(model.l1.kernel[...], l1_before)
    assert not np.array_equal(model.l2.kernel[...], l2_before)


def test_eval_callbacks_and_logging_happen_at_the_right_steps():
    seen = []

    def record(step, model):
        seen.append((step, np.asarray(model.l2.kernel[...]).copy()))
        return {"kernel_norm": jnp.linalg.norm(model.l2.kernel[...]),
                "per_unit": jnp.abs(model.l2.kernel[...][:, 0])}  # an array-valued statistic

    model = make_model()
    initial = np.asarray(model.l2.kernel[...]).copy()
    history = fit(model, data, steps=10, loss_fn=loss_fn, progress=False, log_every=3,
                  eval_fn=lambda m: {"mse": loss_fn(m, data(jax.random.key(7)))}, eval_every=4,
                  callbacks=[record], callback_every=3)
    assert history.steps("eval/mse").tolist() == [0, 4, 8, 10]
    assert history.steps("kernel_norm").tolist() == [0, 3, 6, 9, 10]
    assert history.steps("loss").tolist() == [3, 6, 9, 10]
    assert history["per_unit"].shape == (5, 7)
    np.testing.assert_array_equal(seen[0][1], initial)  # step 0: before any update
    np.testing.assert_array_equal(seen[-1][1], model.l2.kernel[...])  # last: the final model
    np.testing.assert_allclose(history.last("kernel_norm"), np.linalg.norm(seen[-1][1]), rtol=1e-6)
    # JSON round trip keeps every series
    back = History.from_dict(json.loads(history.to_json()))
    for name in history.keys():
        assert back.steps(name).tolist() == history.steps(name).tolist()
        np.testing.assert_array_equal(back[name], history[name])


def test_host_iterator_matches_on_device_data():
    steps = 17
    key = jax.random.key(0)
    batches = [jax.tree.map(np.asarray, data(jax.random.fold_in(key, s))) for s in range(steps)]
    a, b = make_model(), make_model()
    fit(a, data, steps=steps, loss_fn=loss_fn, progress=False)
    history = fit(b, iter(batches), steps=steps, loss_fn=loss_fn, steps_per_call=5, progress=False)
    assert history.final_step == steps and history.stopped_early is None
    for x, y in zip(params_of(a), params_of(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # a list that runs out stops cleanly
    short = fit(make_model(), batches[:6], steps=steps, loss_fn=loss_fn, progress=False)
    assert short.stopped_early == "data" and short.final_step == 6


def test_nan_loss_stops_and_keeps_last_good_params(capsys):
    def poisoned(model, batch):  # the 6th update (calls == 5 before it) gets a NaN loss
        nan_now = model.calls[...] == 5
        return jnp.where(nan_now, jnp.nan, 1.0) * loss_fn(model, batch)

    opt = optax.adam(1e-2)  # constant rate: the schedule must not depend on `steps`
    model = make_model()
    history = fit(model, data, steps=20, loss_fn=poisoned, optimizer=opt, steps_per_call=4)
    assert history.stopped_early == "nan" and history.final_step == 5
    assert "step 6" in history.message and "nan" in history.message
    assert "stopped at step 6" in capsys.readouterr().err
    assert np.isnan(history.last("loss")) and history.steps("loss")[-1] == 6
    reference = make_model()
    fit(reference, data, steps=5, loss_fn=loss_fn, optimizer=opt, steps_per_call=4, progress=False)
    assert_identical(params_of(model), params_of(reference))
    assert int(model.calls[...]) == 5  # the bad step's variable writes are dropped too


@jax.custom_jvp
def _explode_grad(x, scale):  # value 0; gradient `scale` w.r.t. x
    return 0.0 * x


@_explode_grad.defjvp
def _explode_grad_jvp(primals, tangents):
    x, scale = primals
    return 0.0 * x, scale * tangents[0]


def test_infinite_gradient_with_finite_loss_also_stops():
    def diverging(model, batch):
        scale = jnp.where(model.calls[...] == 3, jnp.inf, 0.0)
        return loss_fn(model, batch) + _explode_grad(jnp.sum(model.l1.kernel[...]), scale)

    model = make_model()
    history = fit(model, data, steps=10, loss_fn=diverging, progress=False)
    assert history.stopped_early == "nan" and history.final_step == 3
    assert np.isfinite(history.last("loss")) and not np.isfinite(history.last("grad_norm"))
    assert all(np.all(np.isfinite(p)) for p in params_of(model))


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    kwargs = dict(steps=24, loss_fn=loss_fn, checkpoint_every=8, progress=False, seed=3,
                  log_every=2)
    straight = make_model()
    full = fit(straight, data, checkpoint_dir=tmp_path / "a", **kwargs)

    def crash(step, model):
        if step == 12:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(), data, checkpoint_dir=tmp_path / "b", callbacks=[crash],
            callback_every=4, **kwargs)
    resumed_model = make_model(seed=5)  # different init: everything must come from the checkpoint
    resumed = fit(resumed_model, data, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    assert resumed.start_step == 8 and resumed.final_step == 24
    assert_identical(params_of(straight), params_of(resumed_model))
    assert int(resumed_model.calls[...]) == 24
    assert resumed.steps("loss").tolist() == full.steps("loss").tolist()
    np.testing.assert_array_equal(resumed["loss"], full["loss"])
    # a finished run resumes to itself without training
    again = fit(make_model(seed=9), data, checkpoint_dir=tmp_path / "a", resume=True, **kwargs)
    assert again.start_step == 24 and again.steps_per_s == 0.0


def test_resume_with_host_batches_skips_the_used_ones(tmp_path):
    batches = [jax.tree.map(np.asarray, data(jax.random.key(s))) for s in range(9)]
    kwargs = dict(steps=9, loss_fn=loss_fn, checkpoint_every=3, steps_per_call=2, progress=False)
    straight = make_model()
    fit(straight, iter(batches), checkpoint_dir=tmp_path / "a", **kwargs)

    def crash(step, model):
        if step == 6:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(), iter(batches), checkpoint_dir=tmp_path / "b", callbacks=[crash], **kwargs)
    resumed = make_model()
    history = fit(resumed, iter(batches), checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    assert history.start_step == 3
    assert_identical(params_of(straight), params_of(resumed))


def test_interrupt_keeps_the_parameters_of_that_step(tmp_path):
    snapshots = {}

    def snapshot(step, model):
        snapshots[step] = params_of(model)

    def interrupt(step, model):
        if step == 6:
            raise KeyboardInterrupt

    fit(make_model(), data, steps=12, loss_fn=loss_fn, callbacks=[snapshot], callback_every=3,
        progress=False)
    model = make_model()
    history = fit(model, data, steps=12, loss_fn=loss_fn, callbacks=[interrupt],
                  callback_every=3, progress=False)
    assert history.stopped_early == "interrupted" and history.final_step == 6
    assert "step 6" in history.message
    assert_identical(params_of(model), snapshots[6])


def test_checkpoint_dir_is_never_clobbered(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("do not touch")
    for resume in (False, True):
        with pytest.raises(ValueError, match="checkpoint_dir"):
            fit(make_model(), data, steps=4, loss_fn=loss_fn, checkpoint_dir=tmp_path,
                resume=resume, progress=False)
    assert mine.read_text() == "do not touch" and sorted(os.listdir(tmp_path)) == ["notes.txt"]
    with pytest.raises(ValueError, match="need a checkpoint_dir"):
        fit(make_model(), data, steps=4, loss_fn=loss_fn, checkpoint_every=2)


def test_resume_refuses_steps_below_the_checkpoint_and_a_mismatched_model(tmp_path):
    fit(make_model(), data, steps=6, loss_fn=loss_fn, checkpoint_dir=tmp_path, checkpoint_every=3, progress=False)
    with pytest.raises(ValueError, match=r"is at step 6, beyond steps=4.*pass steps > 6"):
        fit(make_model(), data, steps=4, loss_fn=loss_fn, checkpoint_dir=tmp_path, resume=True, progress=False)
    other = nnx.Linear(5, 2, rngs=nnx.Rngs(0))  # another model: its state does not fit the checkpoint
    with pytest.raises(ValueError, match=r"cannot restore the checkpoint at step 6 .* does not match") as err:
        fit(other, data, steps=8, loss_fn=lambda m, b: (m(b[0]) ** 2).mean(), checkpoint_dir=tmp_path,
            resume=True, progress=False)
    assert err.value.__cause__ is None and len(str(err.value)) < 700  # one line, not pages of orbax traceback


def test_bad_arguments_give_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        fit(model, data, steps=0, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="eval_every must be a positive int or None, got -2"):
        fit(model, data, steps=3, loss_fn=loss_fn, eval_every=-2)
    with pytest.raises(TypeError, match="data must be a function key -> batch or an iterable"):
        fit(model, 42, steps=3, loss_fn=loss_fn)
    with pytest.raises(TypeError, match="data is a single ndarray"):
        fit(model, np.zeros((11, 5)), steps=3, loss_fn=loss_fn)
    with pytest.raises(TypeError, match="tuple of arrays"):
        fit(model, (np.zeros((11, 5)), np.zeros(11)), steps=3, loss_fn=loss_fn)
    with pytest.raises(TypeError, match="model must be an nnx.Module"):
        fit(lambda x: x, data, steps=3, loss_fn=loss_fn)
    with pytest.raises(ValueError, match=r"scalar loss .* got shape \(11,\)"):
        fit(model, data, steps=3, loss_fn=lambda m, b: (m(b[0]) - b[1]) ** 2, progress=False)
    with pytest.raises(ValueError, match="reserved names"):
        fit(model, data, steps=3, progress=False,
            loss_fn=lambda m, b: (loss_fn(m, b), {"grad_norm": 0.0}))
    with pytest.raises(TypeError, match="expected a dict or None"):
        fit(model, data, steps=3, loss_fn=loss_fn, callbacks=[lambda s, m: 1.0], progress=False)
    with pytest.raises(TypeError, match="must be jittable"):
        fit(model, lambda key: (np.asarray(jax.random.normal(key, (11, 5))), np.zeros(11)),
            steps=3, loss_fn=loss_fn, progress=False)
    with pytest.raises(ValueError, match="no variables matching"):
        fit(model, data, steps=3, loss_fn=loss_fn, wrt=nnx.BatchStat)


def test_progress_prints_a_summary_only_when_asked(capsys):
    fit(make_model(), data, steps=3, loss_fn=loss_fn, progress=False)
    assert capsys.readouterr().err == ""
    fit(make_model(), data, steps=3, loss_fn=loss_fn, progress=True)
    err = capsys.readouterr().err
    assert "fit: steps 0->3" in err and "steps/s" in err


def test_benchmark_reports_all_three_rates():  # a smoke test: no timing is asserted
    lines = []
    result = benchmark_fit_vs_nnx_jit(make_model, data, loss_fn, steps=5, repeats=1,
                                      name="tiny MLP", print_fn=lines.append)
    for key in ("nnx_jit_steps_per_s", "fit_step_per_call_steps_per_s", "fit_steps_per_s"):
        assert result[key] > 0
    np.testing.assert_allclose(result["fit_vs_nnx_jit"],
                               result["fit_steps_per_s"] / result["nnx_jit_steps_per_s"])
    assert len(lines) == 4 and "tiny MLP" in lines[0] and "x  (compile" in lines[3]
    with pytest.raises(ValueError, match="give data and loss_fn"):
        benchmark_fit_vs_nnx_jit(make_model)



def test_the_matmul_roofline_counts_every_matmul_of_the_step():
    """`tinytf bench train` times a step's matmuls alone: it must find each one, also inside a
    loop body, and count its FLOPs (checked by hand: 2 * m * k * n each)."""
    class Two(nnx.Module):
        def __init__(self):
            self.a = nnx.Param(jnp.ones((8, 5)))  # x (3, 8) @ a -> (3, 5)
            self.b = nnx.Param(jnp.ones((5, 5)))  # applied 4 times in a scan

        def __call__(self, x):
            h = x @ self.a[...]
            h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ self.b[...]), None), h, None, length=4)
            return h

    dots = _step_dots(Two(), jnp.ones((3, 8)), lambda m, x: jnp.sum(m(x) ** 2))
    # forward: x@a (3x8x5), 4 x h@b (3x5x5); backward: da = x^T dh (8x3x5), 4 x (dh@b^T, h^T dh)
    # (3x5x5 each); x is not a parameter, so no dx.
    gflop, rate = _dots_gflops(dots, repeats=2)
    assert len(dots) == 2 + 3 * 4, dots
    assert gflop == pytest.approx(2 * (3 * 8 * 5 * 2 + 3 * 5 * 5 * 3 * 4) / 1e9)
    assert rate > 0


def test_the_step_timer_runs_the_loss_forward_and_backward():
    """`tinytf bench train` times a step's forward and forward + backward alone and counts its
    FLOPs from the one compiled gradient: both programs run the user's loss (its error comes
    through, and only the gradient runs a custom VJP's backward rule), and both give a time."""
    calls = []

    @jax.custom_vjp
    def square(x):
        return x ** 2

    def backward(x, g):
        jax.debug.callback(lambda: calls.append("backward"))
        return (2 * x * g,)

    square.defvjp(lambda x: (square(x), x), backward)

    class One(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((4, 3)))

    loss = lambda m, x: jnp.sum(square(x @ m.w[...]))  # noqa: E731
    costs = _step_costs(One(), jnp.ones((2, 4)), loss, repeats=2)
    assert 0 < costs["forward_seconds"] < 10 and 0 < costs["forward_backward_seconds"] < 10
    assert costs["flops"] >= 2 * 2 * 4 * 3  # at least the forward's (2, 4) x (4, 3) matmul
    assert len(calls) == 3  # the backward ran: once to compile-and-run, then twice timed; the forward never

    def failing(m, x):
        raise RuntimeError("a broken loss")

    with pytest.raises(RuntimeError, match="a broken loss"):
        _step_costs(One(), jnp.ones((2, 4)), failing, repeats=1)


def test_the_attention_timer_finds_every_attention_call_and_restores_the_layer():
    """`tinytf bench train` times a step's attention alone: it must record each call of
    `MultiHeadAttention.attend` with its shapes and arguments (a causal self-attention and a
    masked cross-attention here), time their forward + backward, and leave the class as it was,
    also when the loss fails."""
    from tinytf.nn import MultiHeadAttention

    class Two(nnx.Module):
        def __init__(self, rngs):
            self.self_attn = MultiHeadAttention(8, 2, rngs=rngs)
            self.cross_attn = MultiHeadAttention(8, 4, kv_dim=6, rngs=rngs)

        def __call__(self, x, context):  # (B, T, 8), (B, S, 6)
            mask = jnp.ones((x.shape[0], 1, x.shape[1], context.shape[1]), bool)
            return self.cross_attn(self.self_attn(x, is_causal=True), context, mask=mask)

    original = MultiHeadAttention.attend
    model = Two(nnx.Rngs(0))
    batch = (jnp.ones((3, 5, 8)), jnp.ones((3, 7, 6)))
    calls = _step_attention(model, batch, lambda m, b: jnp.sum(m(*b) ** 2))
    assert MultiHeadAttention.attend is original
    assert [layer for layer, _, _ in calls] == [model.self_attn, model.cross_attn]
    (q1, k1, v1), kw1 = calls[0][1], calls[0][2]
    assert (q1.shape, k1.shape, v1.shape) == ((3, 5, 2, 4), (3, 5, 2, 4), (3, 5, 2, 4))
    assert kw1["is_causal"] is True and kw1["mask"] is None
    (q2, k2, _), kw2 = calls[1][1], calls[1][2]
    assert (q2.shape, k2.shape) == ((3, 5, 4, 2), (3, 7, 4, 2))
    assert kw2["is_causal"] is False and kw2["mask"].shape == (3, 1, 5, 7)
    assert _attention_seconds(calls, repeats=2) > 0

    def failing(m, b):
        raise RuntimeError("a broken loss")

    with pytest.raises(RuntimeError, match="a broken loss"):
        _step_attention(model, batch, failing)
    assert MultiHeadAttention.attend is original


def test_the_pytorch_attention_peer_runs_at_the_given_shapes():
    """The optional PyTorch peer (`pip install tinytf[bench]`) times fused attention at a step's
    shapes, (B, T, N, H) queries against (B, S, N, H) keys, causal or not."""
    pytest.importorskip("torch")
    from tinytf.apps import bench_torch

    seconds = bench_torch.attention_seconds([((2, 5, 2, 4), (2, 7, 2, 4), False),
                                             ((2, 5, 2, 4), (2, 5, 2, 4), True)], repeats=2, threads=1)
    assert 0 < seconds < 10


DATA_PARALLEL_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train import W_TRUE, loss_fn, make_model, params_of
    from tinytf.config import enable_compilation_cache
    from tinytf.train import fit

    enable_compilation_cache()

    def data(key):  # B=12: divisible by 2 devices
        x = jax.random.normal(key, (12, 5))
        return x, jnp.tanh(x @ W_TRUE)

    assert jax.local_device_count() == 2, jax.devices()
    parallel, single = make_model(), make_model()
    fit(parallel, data, steps=8, loss_fn=loss_fn, progress=False)
    fit(single, data, steps=8, loss_fn=loss_fn, progress=False, data_parallel=False)
    print("devices", len(parallel.l1.kernel.get_value().sharding.device_set))
    for a, b in zip(params_of(parallel), params_of(single)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    batches = [jax.tree.map(np.asarray, data(jax.random.key(s))) for s in range(4)]
    h = fit(make_model(), batches, steps=4, loss_fn=loss_fn, progress=False)
    print("host batches", h.final_step)
    try:
        fit(make_model(), lambda k: jax.tree.map(lambda a: a[:5], data(k)), steps=2,
            loss_fn=loss_fn, progress=False)
    except ValueError as err:
        print("error", err)
""")


@pytest.mark.slow  # ~14 s with a cold compilation cache (a fresh process compiles everything)
def test_data_parallel_over_two_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", DATA_PARALLEL_SCRIPT.format(tests=tests)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "devices 2" in out.stdout and "host batches 4" in out.stdout
    assert "error batch dimension 5" in out.stdout
    assert "not divisible by the 2 devices" in out.stdout
