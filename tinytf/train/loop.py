"""`fit`: the host side of training, read top to bottom.

The device runs many steps per call (`step.make_train_chunk`); the host only decides
how many, and does the work between calls. The per-step data key and the learning
rate depend only on the global step, which is what makes a resumed run bit-identical
to an uninterrupted one.

Reading order:
  1. `fit`: check the arguments, split the model, build the optimizer, resume, loop;
  2. `_Plan`: at which steps the host has work (logging, eval, callbacks, checkpoints);
  3. `_at_boundary`: eval, callbacks and checkpoint at a step;
  4. `_stack_batches`: host batches for one call (iterable data);
  5. `_record_call`: a call's outputs into the History, and the NaN stop's message;
  6. `_summary`: the line printed at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from tinytf.checks import check_positive
from tinytf.progress import progress_bar, progress_enabled, say
from tinytf.train.checkpoints import open_checkpoints, restore_checkpoint, save_checkpoint
from tinytf.train.distributed import (SHARDINGS, agree_min, check_same_everywhere, global_batch, place,
                                      state_shardings, training_mesh)
from tinytf.train.history import History
from tinytf.train.optim import make_optimizer, make_schedule
from tinytf.train.step import data_kind, make_train_chunk


def fit(model: nnx.Module, data, *, steps: int, loss_fn: Callable,
        optimizer: optax.GradientTransformation | None = None, learning_rate: float = 3e-3,
        warmup: float | int = 0.1, weight_decay: float = 0.0, clip: float | None = 1.0,
        b1: float = 0.9, b2: float = 0.95, seed: int = 0, wrt=nnx.Param,
        steps_per_call: int | None = None, log_every: int | None = None,
        eval_fn: Callable | None = None, eval_every: int | None = None,
        callbacks: Sequence[Callable] = (), callback_every: int | None = None,
        progress: bool | None = None, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None, resume: bool = False,
        data_parallel: bool | None = None, sharding: str = "replicated",
        post_update: Callable | None = None) -> History:
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
        every ``eval_every`` steps and at the last step. With the state on many devices,
        make it one compiled call (``nnx.jit``): run eagerly over pretend CPU devices, its
        many small all-device programs can deadlock XLA's CPU runtime on a busy machine.
      callbacks: ``callback(step, model) -> dict | None`` (e.g. per-layer attention
        statistics), logged at step 0, every ``callback_every`` steps (default
        ``eval_every``, else steps // 10) and at the last step. Changes a callback or
        ``eval_fn`` makes to ``model`` are not fed back into training.
      progress: a progress bar (tqdm) and a final summary line on stderr; None (default)
        follows the process-wide switch (`tinytf.progress.set_quiet`, $TINYTF_QUIET).
      checkpoint_dir, checkpoint_every: save params, other state, optimizer state, step
        and history with orbax every ``checkpoint_every`` steps and at the end (the 3
        newest are kept). The directory must be new or empty unless ``resume``; fit
        writes nothing outside it.
      resume: continue from the newest checkpoint in ``checkpoint_dir`` (start fresh if
        there is none); iterable data is advanced past the batches already used.
      data_parallel: split the batch dimension over every device of every process
        (`jax.devices()`; default: when there is more than one). Function data then
        makes the global batch (the same on every process; each device keeps its rows);
        an iterable yields this process's shard of the global batch (its rows, in
        process order), B_global / process count rows each. See `distributed.py`.
      sharding: the layout of the trained state when data parallel: "replicated" (every
        device holds all parameters and optimizer moments) or "fsdp" (each array split
        over the devices along one axis: per-device memory divided by the device count,
        for models that do not fit on one device). The numbers are those of one device
        up to floating-point summation order.
      post_update: ``post_update(model, outputs) -> None``, run inside the compiled step
        after every optimiser update (traced once, jittable): ``model`` holds the updated
        variables and may be changed in place (kept; the optimiser state is not);
        ``outputs`` is the step's {name: value} as logged (``loss``, ``grad_norm``,
        loss_fn's metrics from this step's forward pass). E.g. QK-clip:
        ``fit(..., loss_fn=with_head_max_logits(loss_fn), post_update=qk_clip(tau))``.

    Returns:
      A ``History``. A non-finite loss or gradient norm stops training without raising:
      the model keeps the parameters from before the bad step, ``history.stopped_early
      == "nan"`` and ``history.message`` names the step and the values.
    """
    # 1. the arguments, before anything is compiled
    check_positive("steps", steps)
    for name, value in (("steps_per_call", steps_per_call), ("log_every", log_every),
                        ("eval_every", eval_every), ("callback_every", callback_every),
                        ("checkpoint_every", checkpoint_every)):
        check_positive(name, value, allow_none=True)
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (model, batch) -> loss, got {loss_fn!r}")
    if post_update is not None and not callable(post_update):
        raise TypeError(f"post_update must be callable (model, outputs) -> None, got {post_update!r}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable model -> dict, got {eval_fn!r}")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables (step, model) -> dict | None, got {cb!r}")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_every and resume need a checkpoint_dir")
    kind = data_kind(data)
    show = progress_enabled(progress)
    wall_start = time.perf_counter()

    # 2. the state the device loop carries: (params, other variables, optimizer state)
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
    batch_sharding = state_sharding = None
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    devices, processes = jax.device_count(), jax.process_count()
    if processes > 1 and data_parallel is False:
        raise ValueError(f"data_parallel=False in a run of {processes} processes: each would train its own "
                         "copy; multi-process fit is data parallel over every device")
    if (devices > 1 if data_parallel is None else data_parallel) and devices > 1:
        mesh = training_mesh()
        check_same_everywhere(state[:2], "the model's parameters")
        state_sharding = state_shardings(state, mesh, sharding)
        state = place(state, state_sharding)
        batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    show = show and jax.process_index() == 0  # one progress bar per run, not one per process

    # 3. resume from a checkpoint
    history, start_step = History(), 0
    manager = open_checkpoints(checkpoint_dir, resume) if checkpoint_dir is not None else None
    if manager is not None and resume and manager.latest_step() is not None:
        state, meta = restore_checkpoint(manager, manager.latest_step(), state)
        if meta["seed"] != seed:
            manager.close()
            raise ValueError(f"checkpoint in {checkpoint_dir} was written with seed={meta['seed']}, fit was "
                             f"called with seed={seed}: resume with the same seed")
        start_step = int(meta["step"])
        if start_step > steps:
            manager.close()
            raise ValueError(f"checkpoint in {checkpoint_dir} is at step {start_step}, beyond steps={steps}: with "
                             "resume=True, steps is the total to reach, not the number still to do; pass "
                             f"steps > {start_step} to train on")
        history = History.from_dict(meta["history"])
        history.compile_time_s, history.stopped_early, history.message = 0.0, None, ""
    history.start_step = history.final_step = start_step

    # 4. the loop: one compiled call per stretch of steps between two host stops
    buffer_len = min(steps_per_call or (1000 if kind == "fn" else 8), steps)
    plan = _Plan(steps, log_every or max(1, steps // 1000), (eval_every or steps) if eval_fn else None,
                 (callback_every or eval_every or max(1, steps // 10)) if callbacks else None, checkpoint_every)
    iterator = iter(data) if kind == "iter" else None
    for _ in range(start_step if iterator is not None else 0):
        next(iterator, None)  # resume: skip the batches already trained on
    key = jax.random.key(seed)
    chunk_fn = make_train_chunk(graphdef, wrt, optimizer, schedule, loss_fn, data, kind, buffer_len,
                                batch_sharding, state_sharding, post_update)
    compiled, step, model_step, train_time, trained, per_step_s = None, start_step, None, 0.0, 0, None
    bar = progress_bar(steps, desc="fit", initial=start_step, enabled=show)

    def boundary(step: int, final: bool) -> None:
        nonlocal model_step
        if _at_boundary(model, state, step, final, plan, history, eval_fn, callbacks, manager, seed):
            model_step = step

    pending = None  # outputs of a call not yet processed (for Ctrl-C bookkeeping)
    try:
        if step == 0:
            boundary(0, final=False)
        while step < steps:
            n = min(buffer_len, plan.next_stop(step) - step)
            batches = None
            if kind == "fn":  # first call short, then ~0.3 s per call (n is dynamic: no recompile)
                n = min(n, 16) if per_step_s is None else max(1, min(n, int(0.3 / per_step_s)))
                n = agree_min(n)  # processes time their calls apart; all must run the same steps
            else:
                n, batches = _stack_batches(iterator, n, buffer_len, batch_sharding, step)
                if n == 0:
                    history.stopped_early = "data"
                    history.message = f"the data ran out after step {step} of {steps}"
                    break
            args = (state, key, np.int32(step), np.int32(n), batches)
            if compiled is None:
                t0 = time.perf_counter()
                compiled = _compile(chunk_fn, args)
                history.compile_time_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                state, *pending = compiled(*args)
            except TypeError as err:
                raise ValueError(f"the batch shapes changed at step {step}; fit compiles for one "
                                 f"shape: {err}") from err
            n_done, bad, outputs = jax.device_get(pending)
            first, pending = step, None
            elapsed = time.perf_counter() - t0
            step = first + int(n_done)
            train_time, trained = train_time + elapsed, trained + int(n_done)
            per_step_s = elapsed / max(int(n_done), 1)
            _record_call(history, outputs, first, int(n_done), bool(bad), plan)
            bar.update(step - first)
            bar.set_postfix(loss=f"{float(outputs['loss'][max(int(n_done) - 1, 0)]):.4f}",
                            steps_per_s=f"{trained / train_time:.1f}", refresh=False)
            if bad:
                break
            boundary(step, final=step == steps)
    except KeyboardInterrupt:
        if pending is not None:  # the call finished on the device; count its steps
            step += int(jax.device_get(pending[0]))
        history.stopped_early = "interrupted"
    finally:
        bar.close()
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
    say(_summary(history, start_step, step), enabled=show)
    return history


@jax.jit
def _copy(tree):
    """Fresh buffers for every leaf, in one compiled call (not one eager copy, and one compile, per leaf shape)."""
    return jax.tree.map(lambda x: x.copy(), tree)


def _compile(chunk_fn, args):
    """Compile the chunk for these argument shapes, with a clear error for non-jittable data or loss."""
    try:
        return chunk_fn.lower(*args).compile()
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError("fit traces data(key) (function data) and loss_fn(model, batch) under jax.jit: both "
                        "must be jittable (jax.numpy, jax.random with the given key); for host-made data pass "
                        f"an iterable of batches. {type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class _Plan:
    """At which steps the host has work: every `log_every` (in the device buffers), eval,
    callbacks and checkpoints (a device call ends there), and the last step."""

    steps: int
    log_every: int
    eval_every: int | None  # None: no eval_fn
    callback_every: int | None  # None: no callbacks
    checkpoint_every: int | None

    def next_stop(self, step: int) -> int:
        """The next step at which the host has something to do (eval, callback, save)."""
        stops = [self.steps]
        for every in (self.eval_every, self.callback_every, self.checkpoint_every):
            if every:
                stops.append((step // every + 1) * every)
        return min(stops)

    def logged(self, ran: np.ndarray, last: int) -> np.ndarray:
        """Which of the global steps `ran` are logged: every log_every, the last step of fit and of the call."""
        return (ran % self.log_every == 0) | (ran == self.steps) | (ran == last)


def _at_boundary(model, state, step: int, final: bool, plan: _Plan, history: History, eval_fn, callbacks,
                 manager, seed: int) -> bool:
    """Eval, callbacks and checkpoint at `step`. Returns True when `model` now holds the state of `step`."""
    want_eval = plan.eval_every is not None and (final or step % plan.eval_every == 0)
    want_cb = plan.callback_every is not None and (final or step % plan.callback_every == 0)
    if want_eval or want_cb:  # a copy: the live state is donated to the next call
        nnx.update(model, *_copy(state[:2]))
    if want_eval:
        values = eval_fn(model)
        if not isinstance(values, Mapping):
            raise TypeError(f"eval_fn must return a dict of metrics, got {type(values).__name__}")
        history.log(step, {f"eval/{k}": v for k, v in values.items()})
    for cb in callbacks if want_cb else ():
        values = cb(step, model)
        if values is not None and not isinstance(values, Mapping):
            raise TypeError(f"callback {getattr(cb, '__name__', cb)!r} returned {type(values).__name__}, "
                            "expected a dict or None")
        history.log(step, values or {})
    if manager is not None and step > 0 and manager.latest_step() != step and (
            final or (plan.checkpoint_every and step % plan.checkpoint_every == 0)):
        history.final_step = step
        save_checkpoint(manager, step, state, {"step": step, "seed": seed, "history": history.as_dict()})
    return want_eval or want_cb


def _stack_batches(iterator, n: int, buffer_len: int, batch_sharding, step: int):
    """Up to n batches from the iterator, stacked and padded to (buffer_len, B, ...): (count, stacked)."""
    got = [b for _, b in zip(range(n), iterator)]
    got = got[:agree_min(len(got))]  # every process trains on as many batches as the shortest has
    if not got:
        return 0, None
    padded = got + [got[-1]] * (buffer_len - len(got))  # pad rows are never run
    try:
        stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *padded)
    except ValueError as err:
        raise ValueError(f"batches after step {step} differ in structure or shape: {err}") from err
    if batch_sharding is not None:
        devices = jax.local_device_count()  # this process's rows are split over its own devices
        for x in jax.tree.leaves(stacked):
            if x.ndim >= 2 and x.shape[1] % devices:
                where = "this process's" if jax.process_count() > 1 else "the"
                raise ValueError(f"batch dimension {x.shape[1]} (array {x.shape[1:]}) is not divisible by "
                                 f"{where} {devices} devices; use a multiple or data_parallel=False")
        stacked = global_batch(stacked, batch_sharding, axis=1)
    return len(got), stacked


def _record_call(history: History, outputs: dict, first: int, n_done: int, bad: bool, plan: _Plan) -> None:
    """Log one call's per-step outputs; after a bad (non-finite) step, say where training stopped."""
    ran = first + 1 + np.arange(n_done + bad)  # the global steps this call computed
    keep = plan.logged(ran, first + 1 + n_done)
    history.extend(ran[keep], {name: buf[:len(ran)][keep] for name, buf in outputs.items()})
    history.final_step = first + n_done
    if bad:
        history.stopped_early = "nan"
        history.message = (f"stopped at step {first + n_done + 1}: loss {outputs['loss'][n_done]:.6g}, gradient "
                           f"norm {outputs['grad_norm'][n_done]:.6g} (not finite); the model keeps the "
                           f"parameters after step {first + n_done}")


def _summary(history: History, start_step: int, step: int) -> str:
    finite = [v for v in (history["loss"] if "loss" in history else []) if np.isfinite(v)]
    line = (f"fit: steps {start_step}->{step} in {history.wall_time_s:.1f} s (compile "
            f"{history.compile_time_s:.1f} s), {history.steps_per_s:.1f} steps/s, "
            f"last finite loss {finite[-1] if finite else float('nan'):.4g}")
    return line + (f"\nfit: {history.message}" if history.stopped_early else "")


__all__ = ["fit"]
