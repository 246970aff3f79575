"""What `fit` records: `History`, metric series plus timings and how the run ended."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

_REPR_SERIES = 12  # series listed by repr(History); the rest are named


@dataclass(repr=False)
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

    def __repr__(self) -> str:
        """A few lines, not thousands of numbers: steps, time, and each series' length and last value."""
        head = (f"History(steps {self.start_step}->{self.final_step}, {self.wall_time_s:.1f} s "
                f"(compile {self.compile_time_s:.1f} s), {self.steps_per_s:.1f} steps/s"
                + (f", stopped early: {self.stopped_early}" if self.stopped_early else "") + ")")
        lines = [head]
        names = list(self.series)
        for name in names[:_REPR_SERIES]:
            steps, vals = self.series[name]
            if not vals:
                lines.append(f"  {name}: empty")
                continue
            last = vals[-1]
            shown = f"array{tuple(np.shape(last))}" if np.ndim(last) else f"{last:.4g}" if isinstance(
                last, float) else repr(last)
            lines.append(f"  {name}: {len(vals)} value{'s' * (len(vals) > 1)}, last {shown} at step {steps[-1]}")
        if len(names) > _REPR_SERIES:
            lines.append(f"  ... and {len(names) - _REPR_SERIES} more series: {', '.join(names[_REPR_SERIES:])}")
        return "\n".join(lines)

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
