"""What `fit` records (`History`) and how it saves and restores training state (orbax)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import jax
import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------- history


@dataclass
class History:
    """What happened during ``fit``: metric series plus timings and how the run ended.

    Each metric is a series of (step, value) pairs; different metrics may be logged at
    different steps (training metrics every ``log_every`` steps, ``eval/...`` metrics
    every ``eval_every``, callback outputs every ``callback_every``). Step s means
    "after s updates"; the loss logged at step s is the loss of the s-th update's batch.

    Attributes:
      series: {name: ([steps], [values])}; values are floats or numpy arrays.
      wall_time_s: total time inside ``fit``; compile_time_s: XLA compilation of the step.
      steps_per_s: trained steps per second of training time (no compile, eval, I/O).
      steps_per_s_overall: trained steps per second of wall time, compile included.
      start_step / final_step: global steps at which this call started and ended.
      stopped_early: None, "nan" (non-finite loss or gradient), "interrupted", or "data"
        (the iterator ran out); message: a sentence saying why.
    """

    series: dict[str, tuple[list[int], list[Any]]] = field(default_factory=dict)
    wall_time_s: float = 0.0
    compile_time_s: float = 0.0
    steps_per_s: float = 0.0
    steps_per_s_overall: float = 0.0
    start_step: int = 0
    final_step: int = 0
    stopped_early: str | None = None
    message: str = ""

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        """Append ``values`` (scalars or arrays) at ``step``."""
        for name, value in values.items():
            if isinstance(value, jax.Array):
                value = jax.device_get(value)
            value = np.asarray(value)
            steps, vals = self.series.setdefault(name, ([], []))
            steps.append(int(step))
            vals.append(value.item() if value.ndim == 0 else value)

    def extend(self, steps: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Append many steps at once: ``values[name]`` has shape (len(steps), ...)."""
        for name, rows in values.items():
            series_steps, vals = self.series.setdefault(name, ([], []))
            series_steps.extend(np.asarray(steps).tolist())
            vals.extend(rows.tolist() if rows.ndim == 1 else list(rows))

    def keys(self) -> list[str]:
        return list(self.series)

    def __contains__(self, name: str) -> bool:
        return name in self.series

    def __getitem__(self, name: str) -> np.ndarray:
        """All values of ``name`` as an array (n,) or (n, *shape)."""
        return np.asarray(self._get(name)[1])

    def steps(self, name: str) -> np.ndarray:
        """The steps at which ``name`` was logged, (n,) int."""
        return np.asarray(self._get(name)[0], dtype=np.int64)

    def last(self, name: str, default: Any = None) -> Any:
        """The most recent value of ``name`` (``default`` when it was never logged)."""
        if name not in self.series or not self.series[name][1]:
            return default
        return self.series[name][1][-1]

    def _get(self, name: str) -> tuple[list[int], list[Any]]:
        if name not in self.series:
            raise KeyError(f"no metric {name!r} in history; logged: {sorted(self.series)}")
        return self.series[name]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: {"metrics": {name: {"step": [...], "value": [...]}}, ...}."""
        metrics = {name: {"step": list(steps),
                          "value": [v.tolist() if isinstance(v, np.ndarray) else v for v in vals]}
                   for name, (steps, vals) in self.series.items()}
        info = {k: getattr(self, k) for k in ("wall_time_s", "compile_time_s", "steps_per_s",
                                              "steps_per_s_overall", "start_step", "final_step",
                                              "stopped_early", "message")}
        return {"metrics": metrics, **info}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The history as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.as_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of ``as_dict`` (lists of lists come back as numpy arrays)."""
        history = cls(**{k: v for k, v in data.items() if k != "metrics"})
        for name, entry in data["metrics"].items():
            vals = [np.asarray(v) if isinstance(v, list) else v for v in entry["value"]]
            history.series[name] = (list(entry["step"]), vals)
        return history


# ------------------------------------------------------------------------ checkpoints
# A checkpoint is the flat list of state leaves (params, other variables, optimizer
# state; PRNG keys stored as their raw data) plus JSON metadata (step, seed, history).
# Restoring unflattens into the structure of the live state, so any optax state works.


def _open_checkpoints(directory: str | os.PathLike, resume: bool):
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


def _save_checkpoint(manager, step: int, state, meta: dict) -> None:
    import orbax.checkpoint as ocp

    leaves = jax.tree.leaves(state)
    arrays = {f"{i:05d}": jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                               meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


def _restore_checkpoint(manager, step: int, like):
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
    except (ValueError, KeyError) as err:
        raise ValueError(f"checkpoint at step {step} in {manager.directory} does not match this "
                         f"model/optimizer ({len(leaves)} state arrays expected): {err}") from err
    restored = [jax.random.wrap_key_data(got["state"][f"{i:05d}"], impl=jax.random.key_impl(x))
                if _is_key(x) else got["state"][f"{i:05d}"] for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, restored), got["meta"]


