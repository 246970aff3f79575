"""Checkpoints of `fit` with orbax: save, restore, never overwrite what is not ours.

A checkpoint is the flat list of state leaves (params, other variables, optimizer
state; PRNG keys stored as their raw data) plus JSON metadata (step, seed, history).
Restoring unflattens into the structure of the live state, so any optax state works.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp


def open_checkpoints(directory: str | os.PathLike, resume: bool):
    """An orbax CheckpointManager on `directory` (new or empty unless resuming; keeps the 3 newest)."""
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    directory = Path(directory).expanduser().absolute()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint_dir {str(directory)!r} is a file, expected a directory")
    entries = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    foreign = [e for e in entries if not (directory / e / "_CHECKPOINT_METADATA").exists()
               and "orbax-checkpoint-tmp" not in e]  # tmp: a save cut short
    if entries and not resume:
        raise ValueError(f"checkpoint_dir {str(directory)!r} is not empty (found {entries[:5]}); "
                         "fit never overwrites files: pass resume=True to continue from its "
                         "checkpoints, or choose a new directory")
    if foreign:
        raise ValueError(f"checkpoint_dir {str(directory)!r} holds files that are not tinytf "
                         f"checkpoints ({foreign[:5]}); fit writes only into a directory of its "
                         "own: choose a new or empty one")
    options = ocp.CheckpointManagerOptions(max_to_keep=3, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def _is_key(x) -> bool:
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_checkpoint(manager, step: int, state, meta: dict) -> None:
    """Save the state leaves and JSON metadata at `step`, and wait until they are on disk."""
    import orbax.checkpoint as ocp

    leaves = jax.tree.leaves(state)
    arrays = {f"{i:05d}": jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


def restore_checkpoint(manager, step: int, like):
    """Restore the checkpoint at ``step`` into the structure (and sharding) of ``like``."""
    import orbax.checkpoint as ocp

    leaves, treedef = jax.tree.flatten(like)
    abstract = {}
    for i, x in enumerate(leaves):
        raw = jax.random.key_data(x) if _is_key(x) else x
        abstract[f"{i:05d}"] = jax.ShapeDtypeStruct(raw.shape, raw.dtype, sharding=raw.sharding)
    try:
        got = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as err:  # orbax raises many kinds, with pages of traceback: one clear line instead
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot restore the checkpoint at step {step} in {manager.directory}: it does not "
                         f"match this model and optimizer ({len(leaves)} state arrays expected) or it is "
                         f"damaged ({type(err).__name__}: {first}); resume with the same model, optimizer and "
                         "arguments, or start in a new checkpoint_dir") from None
    restored = [jax.random.wrap_key_data(got["state"][f"{i:05d}"], impl=jax.random.key_impl(x))
                if _is_key(x) else got["state"][f"{i:05d}"] for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, restored), got["meta"]


__all__ = ["open_checkpoints", "save_checkpoint", "restore_checkpoint"]
