"""The training loop of tinytf: ``fit``, its optimizer, its history, and loss helpers.

Every lesson trains through ``fit``. Small models on a CPU are bound by Python, not by
arithmetic: a per-step ``nnx.jit`` call spends most of its time walking the module
graph. So ``fit`` uses the functional form that Flax's performance guide recommends —
``nnx.split`` the model once into (graph, trainable Params, other state), run a plain
``jax.jit`` over the state, ``nnx.merge`` only inside the trace — and runs many steps
per dispatch in an on-device loop (``lax.while_loop``). One compiled function serves
every chunk length, so the result never depends on how the steps were chunked: the
per-step data key and the learning rate depend only on the global step, which is what
makes a resumed run bit-identical to an uninterrupted one.

Reading order: ``cross_entropy`` / ``accuracy`` (losses the lessons share),
``make_schedule`` / ``make_optimizer`` (AdamW, Loshchilov & Hutter 2019, with linear
warmup and cosine decay, Goyal et al. 2017 / Loshchilov & Hutter 2017; global-norm
clipping, Pascanu et al. 2013), ``History``, the checkpoint helpers (orbax), ``fit``
and its compiled chunk.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tinytf.checks import check_positive
from tinytf.train.history import History, _open_checkpoints, _restore_checkpoint, _save_checkpoint
from tinytf.train.optim import make_optimizer, make_schedule

# ------------------------------------------------------------------------------- fit

_RESERVED = ("loss", "grad_norm", "learning_rate")


class _Progress:
    """A one-line progress bar on stderr (carriage return), live only on a terminal."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self.live = enabled and sys.stderr.isatty()
        self.last_draw, self.last = 0.0, (0, float("nan"), 0.0)

    def update(self, step: int, loss: float, steps_per_s: float, force: bool = False) -> None:
        self.last = (step, loss, steps_per_s)
        now = time.perf_counter()
        if self.live and (force or now - self.last_draw > 0.1 or step == self.total):
            width = 24
            done = int(width * step / self.total)
            bar = "#" * done + "." * (width - done)
            sys.stderr.write(f"\r[{bar}] {step}/{self.total} loss {loss:.4f} "
                             f"{steps_per_s:.1f} steps/s ")
            sys.stderr.flush()
            self.last_draw = now

    def close(self, summary: str) -> None:
        if self.live and self.last_draw:
            self.update(*self.last, force=True)
            sys.stderr.write("\n")
        if self.enabled:
            sys.stderr.write(summary + "\n")
            sys.stderr.flush()


def _data_kind(data) -> str:
    """'fn' for a jittable ``key -> batch`` function, 'iter' for an iterable of batches."""
    if callable(data) and not hasattr(data, "__next__"):
        return "fn"
    if isinstance(data, (np.ndarray, jax.Array, Mapping, str, bytes)):
        raise TypeError(f"data is a single {type(data).__name__}, expected a function key -> batch "
                        "or an iterable of batches; to train on one fixed batch pass "
                        "`lambda key: batch` (or itertools.repeat(batch))")
    arrays = (np.ndarray, jax.Array)
    if isinstance(data, tuple) and data and all(isinstance(x, arrays) for x in data):
        raise TypeError("data is a tuple of arrays, which reads as a single batch; expected a "
                        "function key -> batch or an iterable of batches (e.g. a list of tuples, "
                        "or `lambda key: (x, y)` for one fixed batch)")
    if isinstance(data, Iterable):
        return "iter"
    raise TypeError(f"data must be a function key -> batch or an iterable of batches, got "
                    f"{type(data).__name__}")


def _unpack_loss(out) -> tuple[jax.Array, dict]:
    loss, metrics = (out if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)
                     else (out, {}))
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(f"loss_fn must return a scalar loss (or (loss, metrics)), got shape "
                         f"{loss.shape}")
    clash = [k for k in metrics if k in _RESERVED]
    if clash:
        raise ValueError(f"loss_fn metrics use reserved names {clash}; fit logs {_RESERVED} itself")
    return loss, dict(metrics)


def _make_chunk(graphdef, wrt, tx, schedule, loss_fn, data, kind, buffer_len, batch_sharding):
    """Build ``chunk(state, key, start, n, batches)``: up to ``buffer_len`` steps on device.

    Runs global steps start, start+1, ... (0-based) until ``n`` are done or one is bad.
    A step whose loss or gradient norm is not finite is not applied: the loop stops with
    the state from before it, so the last good parameters are exact. Returns
    (state, n_done, bad, outputs); outputs[name] has shape (buffer_len, ...) and rows
    0..n_done-1 (and row n_done when bad) are filled.
    """

    def shard(batch):  # data parallel: split the batch dimension over the devices
        if batch_sharding is None:
            return batch
        devices = batch_sharding.mesh.size

        def constrain(x):
            if jnp.ndim(x) == 0:
                return jax.lax.with_sharding_constraint(x, batch_sharding.replicated())
            if x.shape[0] % devices:
                raise ValueError(f"batch dimension {x.shape[0]} (array {x.shape}) is not divisible "
                                 f"by the {devices} devices; use a multiple or data_parallel=False")
            return jax.lax.with_sharding_constraint(x, batch_sharding)

        return jax.tree.map(constrain, batch)

    def loss_of(params, rest, batch):
        # Fresh Variable objects at this trace level (the forward pass may write to them);
        # merging happens at trace time only: no Python cost per step.
        params, rest = jax.tree.map(lambda x: x, (params, rest))
        model = nnx.merge(graphdef, params, rest)
        loss, metrics = _unpack_loss(loss_fn(model, batch))
        _, _, new_rest = nnx.split(model, wrt, ...)  # what the forward pass wrote (BN stats, RNG)
        return loss, (metrics, new_rest)

    def one_step(state, batch, step):
        params, rest, opt_state = state
        (loss, (metrics, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            params, rest, batch)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        out = {"loss": loss.astype(jnp.float32),
               "grad_norm": optax.tree.norm(grads).astype(jnp.float32), **metrics}
        if schedule is not None:
            out["learning_rate"] = jnp.asarray(schedule(step), jnp.float32)
        return (new_params, new_rest, new_opt_state), out

    def get_batch(key, step, i, batches):
        if kind == "fn":
            return shard(data(jax.random.fold_in(key, step)))  # the key depends on the step only
        return jax.tree.map(lambda b: b[i], batches)  # (buffer_len, B, ...) -> (B, ...)

    def chunk(state, key, start, n, batches):
        batch0 = jax.eval_shape(get_batch, key, start, 0, batches)
        # the shapes of one step's outputs, from the forward pass alone (tracing the backward
        # pass twice would double the trace time of every fit call)
        metrics = jax.eval_shape(loss_of, state[0], state[1], batch0)[1][0]
        scalar = jax.ShapeDtypeStruct((), jnp.float32)
        out_shapes = {"loss": scalar, "grad_norm": scalar, **metrics}
        if schedule is not None:
            out_shapes["learning_rate"] = scalar
        buffers = jax.tree.map(lambda s: jnp.full((buffer_len, *s.shape), jnp.nan, s.dtype)
                               if jnp.issubdtype(s.dtype, jnp.floating)
                               else jnp.zeros((buffer_len, *s.shape), s.dtype), out_shapes)

        def cond(carry):
            i, bad, _, _ = carry
            return (i < n) & ~bad

        def body(carry):
            i, _, state, buffers = carry
            step = start + i
            new_state, out = one_step(state, get_batch(key, step, i, batches), step)
            ok = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
            state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
            buffers = jax.tree.map(lambda buf, v: buf.at[i].set(v), buffers, out)
            return i + ok.astype(i.dtype), ~ok, state, buffers

        i, bad, state, buffers = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), state, buffers))
        return state, i, bad, buffers

    return jax.jit(chunk, donate_argnums=(0,))


def _copy(tree):
    return jax.tree.map(lambda x: x.copy(), tree)


def fit(model: nnx.Module, data, *, steps: int, loss_fn: Callable,
        optimizer: optax.GradientTransformation | None = None, learning_rate: float = 3e-3,
        warmup: float | int = 0.1, weight_decay: float = 0.0, clip: float | None = 1.0,
        b1: float = 0.9, b2: float = 0.95, seed: int = 0, wrt=nnx.Param,
        steps_per_call: int | None = None, log_every: int | None = None,
        eval_fn: Callable | None = None, eval_every: int | None = None,
        callbacks: Sequence[Callable] = (), callback_every: int | None = None,
        progress: bool = True, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None, resume: bool = False,
        data_parallel: bool | None = None) -> History:
    """Train ``model`` in place for ``steps`` updates and return its ``History``.

    Args:
      model: an ``nnx.Module``. Its ``wrt`` variables (Params) are trained; every other
        variable (head gates, batch statistics, RNG state) is left alone by the
        optimizer but keeps whatever the forward pass writes into it. The trained state
        is written back into ``model`` at the end (also after a NaN stop or Ctrl-C).
      data: either a jittable function ``key -> batch`` (data made on the device, the
        fast path; key = fold_in(key(seed), global step)), or an iterable of batches
        (pytrees of host arrays, all with the same shapes).
      steps: number of updates; with ``resume`` it is the total, not the remainder.
      loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, {name: scalar})``.
      optimizer: an optax transformation. Default: ``make_optimizer(learning_rate,
        steps, warmup=, weight_decay=, clip=, b1=, b2=)``, whose learning rate is logged;
        a given optimizer makes fit ignore those six arguments.
      seed: seeds the data keys. Same seed and arguments, bit-identical parameters.
      wrt: nnx filter of the trained variables (default ``nnx.Param``).
      steps_per_call: most steps per compiled call (default 1000 for function data, 8
        for iterables); with function data the count adapts to ~0.3 s per call. Results
        do not depend on it: one compiled loop serves every count.
      log_every: log training metrics every this many steps (default 1, or ~1000
        points for long runs); the last step is always logged.
      eval_fn: ``eval_fn(model) -> {name: value}``, logged as ``eval/name`` at step 0,
        every ``eval_every`` steps and at the last step.
      callbacks: ``callback(step, model) -> dict | None`` (e.g. per-layer attention
        statistics), logged at step 0, every ``callback_every`` steps (default
        ``eval_every``, else steps // 10) and at the last step. Changes a callback or
        ``eval_fn`` makes to ``model`` are not fed back into training.
      progress: a progress bar on stderr (live on a terminal) and a final summary line.
      checkpoint_dir, checkpoint_every: save params, other state, optimizer state, step
        and history with orbax every ``checkpoint_every`` steps and at the end (the 3
        newest are kept). The directory must be new or empty unless ``resume``; fit
        writes nothing outside it.
      resume: continue from the newest checkpoint in ``checkpoint_dir`` (start fresh if
        there is none); iterable data is advanced past the batches already used.
      data_parallel: shard the batch dimension over all local devices, parameters
        replicated (default: when there is more than one device).

    Returns:
      A ``History``. A non-finite loss or gradient norm stops training without raising:
      the model keeps the parameters from before the bad step, ``history.stopped_early
      == "nan"`` and ``history.message`` names the step and the values.
    """
    check_positive("steps", steps)
    for name, value in (("steps_per_call", steps_per_call), ("log_every", log_every),
                        ("eval_every", eval_every), ("callback_every", callback_every),
                        ("checkpoint_every", checkpoint_every)):
        check_positive(name, value, allow_none=True)
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (model, batch) -> loss, got {loss_fn!r}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable model -> dict, got {eval_fn!r}")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables (step, model) -> dict | None, got {cb!r}")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_every and resume need a checkpoint_dir")
    kind = _data_kind(data)
    wall_start = time.perf_counter()

    graphdef, params, rest = nnx.split(model, wrt, ...)
    if not jax.tree.leaves(params):
        raise ValueError(f"model has no variables matching wrt={wrt!r}: nothing to train")
    schedule = None
    if optimizer is None:
        schedule = make_schedule(learning_rate, steps, warmup=warmup)
        optimizer = make_optimizer(learning_rate, steps, warmup=warmup, weight_decay=weight_decay,
                                   clip=clip, b1=b1, b2=b2)
    # Our own copy: its buffers are donated to each call; the model's stay valid.
    state = _copy((params, rest, optimizer.init(params)))

    devices = jax.local_device_count()
    batch_sharding = None
    if (devices > 1 if data_parallel is None else data_parallel) and devices > 1:
        mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))  # replicated
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))

    history, start_step = History(), 0
    manager = _open_checkpoints(checkpoint_dir, resume) if checkpoint_dir is not None else None
    if manager is not None and resume and manager.latest_step() is not None:
        state, meta = _restore_checkpoint(manager, manager.latest_step(), state)
        if meta["seed"] != seed:
            manager.close()
            raise ValueError(f"checkpoint in {checkpoint_dir} was written with seed="
                             f"{meta['seed']}, fit was called with seed={seed}: resume with the "
                             "same seed")
        history = History.from_dict(meta["history"])
        history.compile_time_s, history.stopped_early, history.message = 0.0, None, ""
        start_step = int(meta["step"])
    history.start_step = history.final_step = start_step

    buffer_len = min(steps_per_call or (1000 if kind == "fn" else 8), steps)
    log_every = log_every or max(1, steps // 1000)
    callback_every = callback_every or eval_every or max(1, steps // 10)
    iterator = iter(data) if kind == "iter" else None
    for _ in range(start_step if iterator is not None else 0):
        next(iterator, None)  # resume: skip the batches already trained on

    key = jax.random.key(seed)
    chunk_fn = _make_chunk(graphdef, wrt, optimizer, schedule, loss_fn, data, kind, buffer_len,
                           batch_sharding)
    compiled, bar = None, _Progress(progress, steps)
    step, model_step, train_time, trained, per_step_s = start_step, None, 0.0, 0, None

    def at_boundary(step: int, final: bool) -> None:
        """Eval, callbacks and checkpoint at ``step``."""
        nonlocal model_step
        want_eval = eval_fn is not None and (final or step % (eval_every or steps) == 0)
        want_cb = bool(callbacks) and (final or step % callback_every == 0)
        if want_eval or want_cb:  # a copy: the live state is donated to the next call
            nnx.update(model, *_copy(state[:2]))
            model_step = step
        if want_eval:
            values = eval_fn(model)
            if not isinstance(values, Mapping):
                raise TypeError(f"eval_fn must return a dict of metrics, got "
                                f"{type(values).__name__}")
            history.log(step, {f"eval/{k}": v for k, v in values.items()})
        for cb in callbacks if want_cb else ():
            values = cb(step, model)
            if values is not None and not isinstance(values, Mapping):
                raise TypeError(f"callback {getattr(cb, '__name__', cb)!r} returned "
                                f"{type(values).__name__}, expected a dict or None")
            history.log(step, values or {})
        if manager is not None and step > 0 and manager.latest_step() != step and (
                final or (checkpoint_every and step % checkpoint_every == 0)):
            history.final_step = step
            _save_checkpoint(manager, step, state,
                             {"step": step, "seed": seed, "history": history.as_dict()})

    def next_stop(step: int) -> int:
        """The next step at which the host has something to do (eval, callback, save)."""
        stops = [steps]
        for every in (eval_every if eval_fn else None, callback_every if callbacks else None,
                      checkpoint_every):
            if every:
                stops.append((step // every + 1) * every)
        return min(stops)

    def host_batches(n: int):
        """Up to n batches from the iterator, stacked and padded to (buffer_len, B, ...)."""
        got = [b for _, b in zip(range(n), iterator)]
        if not got:
            return 0, None
        padded = got + [got[-1]] * (buffer_len - len(got))  # pad rows are never run
        try:
            stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *padded)
        except ValueError as err:
            raise ValueError(f"batches after step {step} differ in structure or shape: "
                             f"{err}") from err
        if batch_sharding is not None:
            devices = batch_sharding.mesh.size
            for x in jax.tree.leaves(stacked):
                if x.ndim >= 2 and x.shape[1] % devices:
                    raise ValueError(f"batch dimension {x.shape[1]} (array {x.shape[1:]}) is not "
                                     f"divisible by the {devices} devices; use a multiple or "
                                     "data_parallel=False")
            split = NamedSharding(batch_sharding.mesh, PartitionSpec(None, "data"))
            stacked = jax.device_put(stacked, jax.tree.map(
                lambda x: split if x.ndim >= 2 else batch_sharding.replicated(), stacked))
        return len(got), stacked

    pending = None  # outputs of a call not yet processed (for Ctrl-C bookkeeping)
    try:
        if step == 0:
            at_boundary(0, final=False)
        while step < steps:
            n = min(buffer_len, next_stop(step) - step)
            batches = None
            if kind == "fn":  # first call short, then ~0.3 s per call (n is dynamic: no recompile)
                n = min(n, 16) if per_step_s is None else max(1, min(n, int(0.3 / per_step_s)))
            else:
                n, batches = host_batches(n)
                if n == 0:
                    history.stopped_early = "data"
                    history.message = f"the data ran out after step {step} of {steps}"
                    break
            args = (state, key, np.int32(step), np.int32(n), batches)
            if compiled is None:
                t0 = time.perf_counter()
                try:
                    compiled = chunk_fn.lower(*args).compile()
                except (jax.errors.TracerArrayConversionError,
                        jax.errors.ConcretizationTypeError) as err:
                    raise TypeError("fit traces data(key) (function data) and loss_fn(model, "
                                    "batch) under jax.jit: both must be jittable (jax.numpy, "
                                    "jax.random with the given key); for host-made data pass an "
                                    f"iterable of batches. {type(err).__name__}: {err}") from err
                history.compile_time_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                state, *pending = compiled(*args)
            except TypeError as err:
                raise ValueError(f"the batch shapes changed at step {step}; fit compiles for one "
                                 f"shape: {err}") from err
            n_done, bad, outputs = jax.device_get(pending)
            first, step, pending = step, step + int(n_done), None
            elapsed = time.perf_counter() - t0
            n_done, bad = int(n_done), bool(bad)
            train_time, trained = train_time + elapsed, trained + n_done
            per_step_s = elapsed / max(n_done, 1)
            ran = first + 1 + np.arange(n_done + bad)  # the global steps this call computed
            keep = (ran % log_every == 0) | (ran == steps) | (ran == first + 1 + n_done)
            history.extend(ran[keep], {name: buf[:len(ran)][keep] for name, buf in outputs.items()})
            history.final_step = step
            bar.update(step, float(outputs["loss"][max(n_done - 1, 0)]), trained / train_time)
            if bad:
                history.stopped_early = "nan"
                history.message = (
                    f"stopped at step {step + 1}: loss {outputs['loss'][n_done]:.6g}, gradient "
                    f"norm {outputs['grad_norm'][n_done]:.6g} (not finite); the model keeps the "
                    f"parameters after step {step}")
                break
            at_boundary(step, final=step == steps)
    except KeyboardInterrupt:
        if pending is not None:  # the call finished on the device; count its steps
            step += int(jax.device_get(pending[0]))
        history.stopped_early = "interrupted"
    finally:
        if not any(x.is_deleted() for x in jax.tree.leaves(state)):
            nnx.update(model, *state[:2])
            model_step = step
        if manager is not None:
            manager.close()
    if history.stopped_early == "interrupted":
        history.message = (f"interrupted at step {step}; the model keeps the parameters of step "
                           f"{model_step if model_step is not None else 'none (unchanged)'}")

    history.final_step = step
    history.wall_time_s = time.perf_counter() - wall_start
    history.steps_per_s = trained / train_time if train_time else 0.0
    history.steps_per_s_overall = trained / history.wall_time_s if trained else 0.0
    finite = [v for v in (history["loss"] if "loss" in history else []) if np.isfinite(v)]
    summary = (f"fit: steps {start_step}->{step} in {history.wall_time_s:.1f} s (compile "
               f"{history.compile_time_s:.1f} s), {history.steps_per_s:.1f} steps/s, "
               f"last finite loss {finite[-1] if finite else float('nan'):.4g}")
    bar.close(summary + (f"\nfit: {history.message}" if history.stopped_early else ""))
    return history


