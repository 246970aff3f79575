"""One training step, and many of them in one compiled call: the device side of `fit`.

Small models on a CPU are bound by Python, not by arithmetic: a per-step `nnx.jit`
call spends most of its time walking the module graph. So `fit` uses the functional
form that Flax's performance guide recommends — `nnx.split` the model once into
(graph, trainable Params, other state), run a plain `jax.jit` over the state, and
`nnx.merge` only inside the trace — and runs many steps per dispatch in an on-device
`lax.while_loop`. The number of steps is a runtime argument, so one compiled function
serves every chunk length and the result never depends on how steps were chunked.

Reading order: `unpack_loss` (what a loss function may return), `data_kind` (function
data vs an iterable of batches), then `make_train_chunk`: the loss, one step, the
batch of a step, and the loop that runs up to `buffer_len` steps and stops before a
non-finite one. An optional `post_update(model, outputs)` hook runs inside the step,
after the optimiser update (QK-clip, `qk_clip.py`, is one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

RESERVED_METRICS = ("loss", "grad_norm", "learning_rate")
"""Names fit logs itself; a loss function's metrics may not use them."""


def unpack_loss(out) -> tuple[jax.Array, dict]:
    """A loss function's output -> (scalar loss, {name: metric}).

    `loss_fn(model, batch)` may return a scalar or (scalar, {name: scalar or array}).
    """
    loss, metrics = (out if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)
                     else (out, {}))
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(f"loss_fn must return a scalar loss (or (loss, metrics)), got shape "
                         f"{loss.shape}")
    clash = [k for k in metrics if k in RESERVED_METRICS]
    if clash:
        raise ValueError(f"loss_fn metrics use reserved names {clash}; fit logs {RESERVED_METRICS} itself")
    return loss, dict(metrics)


def data_kind(data) -> str:
    """'fn' for a jittable `key -> batch` function, 'iter' for an iterable of batches."""
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


def make_train_chunk(graphdef, wrt, tx: optax.GradientTransformation, schedule, loss_fn, data, kind: str,
                     buffer_len: int, batch_sharding=None, state_sharding=None, post_update=None):
    """Build `chunk(state, key, start, n, batches)`: up to `buffer_len` steps on the device.

    Runs global steps start, start+1, ... (0-based) until `n` are done or one is bad.
    A step whose loss or gradient norm is not finite is not applied: the loop stops with
    the state from before it, so the last good parameters are exact.

    Args:
      graphdef, wrt: the model's graph and the filter of trained variables.
      tx, schedule: the optax transformation and its learning-rate schedule (or None).
      loss_fn: `loss_fn(model, batch) -> loss | (loss, metrics)`.
      data, kind: a `key -> batch` function ("fn"), or "iter" (batches come stacked
        in the `batches` argument, (buffer_len, B, ...)).
      buffer_len: the most steps one call runs (the size of the output buffers).
      batch_sharding: a NamedSharding splitting the batch over devices, or None.
      state_sharding: the NamedSharding of every state leaf (replicated or FSDP, see
        `distributed.state_shardings`), kept through every step; None on one device.
      post_update: None, or `post_update(model, outputs)`, traced into every step after
        the optimiser update: `model` holds the updated variables (what the hook writes
        into them is kept; the optimiser state is not touched), `outputs` is the step's
        {name: value} (loss, grad_norm, learning_rate, loss_fn's metrics: measured in
        this step's forward pass, before the update). A step that turns out non-finite
        is dropped hook and all.

    Returns:
      A jitted function (donating the state) returning (state, n_done, bad, outputs);
      outputs[name] has shape (buffer_len, ...) and rows 0..n_done-1 (and row n_done
      when bad) are filled.
    """

    def shard(batch):  # data parallel: split the batch dimension over the devices
        if batch_sharding is None:
            return batch
        devices = batch_sharding.mesh.size

        def constrain(x):
            if jnp.ndim(x) == 0:
                return jax.lax.with_sharding_constraint(x, NamedSharding(batch_sharding.mesh, PartitionSpec()))
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
        loss, metrics = unpack_loss(loss_fn(model, batch))
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
        if post_update is not None:  # merged at trace time only, as in loss_of
            model = nnx.merge(graphdef, *jax.tree.map(lambda x: x, (new_params, new_rest)))
            post_update(model, dict(out))
            _, new_params, new_rest = nnx.split(model, wrt, ...)
        return (new_params, new_rest, new_opt_state), out

    # Traced once per fit: `output_buffers` traces it for the shapes of its outputs (forward
    # and backward), and the loop body's call with the same argument types reuses that trace
    # (jit's trace cache); inline=True puts its operations straight into the loop's program.
    one_step = jax.jit(one_step, inline=True)

    def get_batch(key, step, i, batches):
        if kind == "fn":
            return shard(data(jax.random.fold_in(key, step)))  # the key depends on the step only
        return jax.tree.map(lambda b: b[i], batches)  # (buffer_len, B, ...) -> (B, ...)

    def output_buffers(state, key, start, batches):
        """NaN-filled (buffer_len, ...) buffers for every per-step output."""
        step = start + jnp.zeros((), jnp.int32)  # the types the loop body passes (see one_step)
        batch0 = jax.eval_shape(get_batch, key, step, 0, batches)
        out_shapes = jax.eval_shape(one_step, state, batch0, step)[1]
        return jax.tree.map(lambda s: jnp.full((buffer_len, *s.shape), jnp.nan, s.dtype)
                            if jnp.issubdtype(s.dtype, jnp.floating)
                            else jnp.zeros((buffer_len, *s.shape), s.dtype), out_shapes)

    def chunk(state, key, start, n, batches):
        def cond(carry):
            i, bad, _, _ = carry
            return (i < n) & ~bad

        def body(carry):
            i, _, state, buffers = carry
            step = start + i
            new_state, out = one_step(state, get_batch(key, step, i, batches), step)
            if state_sharding is not None:  # the layout of the state stays what fit chose
                new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
            ok = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
            state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
            buffers = jax.tree.map(lambda buf, v: buf.at[i].set(v), buffers, out)
            return i + ok.astype(i.dtype), ~ok, state, buffers

        buffers = output_buffers(state, key, start, batches)
        i, bad, state, buffers = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), state, buffers))
        return state, i, bad, buffers

    if state_sharding is None:
        return jax.jit(chunk, donate_argnums=(0,))
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())  # counters and per-step outputs: every process reads them
    return jax.jit(chunk, donate_argnums=(0,),
                   out_shardings=(state_sharding, replicated, replicated, replicated))


__all__ = ["RESERVED_METRICS", "unpack_loss", "data_kind", "make_train_chunk"]
