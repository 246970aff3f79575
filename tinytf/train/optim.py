"""The optimizer of `fit`: AdamW (Loshchilov & Hutter 2019) with linear warmup then cosine decay
(Goyal et al. 2017; Loshchilov & Hutter 2017) and global-norm clipping (Pascanu et al. 2013)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from tinytf.checks import check_int, check_number

# -------------------------------------------------------------------------- optimizer


def _warmup_steps(warmup: float | int, steps: int) -> int:
    """``warmup`` as a step count: an int is a count, a float in [0, 1] a fraction."""
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)):
        raise TypeError(f"warmup must be an int (steps) or a float fraction, got {warmup!r}")
    count = warmup if isinstance(warmup, int) else int(round(warmup * steps))
    if isinstance(warmup, float) and not 0.0 <= warmup <= 1.0:
        raise ValueError(f"warmup={warmup} as a fraction must lie in [0, 1]")
    if not 0 <= count <= steps:
        raise ValueError(f"warmup={warmup} gives {count} warmup steps, expected 0..steps={steps}")
    return count


def make_schedule(learning_rate: float, steps: int, *, warmup: float | int = 0.1,
                  end_fraction: float = 0.01) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate``, then cosine decay to ``end_fraction`` of it.

    Args:
      learning_rate: peak learning rate.
      steps: total number of updates (the decay ends there).
      warmup: warmup length; an int is a number of steps, a float a fraction of ``steps``.
      end_fraction: final learning rate as a fraction of the peak.

    Returns:
      An optax schedule ``step -> learning rate``; it depends on the step only.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    check_int("steps", steps, low=1)
    if not 0.0 <= end_fraction <= 1.0:
        raise ValueError(f"end_fraction must lie in [0, 1], got {end_fraction}")
    warmup_steps = _warmup_steps(warmup, steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
        decay_steps=max(steps, warmup_steps + 1), end_value=learning_rate * end_fraction)


def make_optimizer(learning_rate: float, steps: int, *, warmup: float | int = 0.1,
                   weight_decay: float = 0.0, clip: float | None = 1.0, b1: float = 0.9,
                   b2: float = 0.95, end_fraction: float = 0.01) -> optax.GradientTransformation:
    """AdamW with linear warmup, cosine decay and global-norm gradient clipping.

    Weight decay (decoupled, Loshchilov & Hutter 2019) applies only to parameters with
    ``ndim >= 2`` (weight matrices, embeddings, convolution kernels): biases and norm
    scales are not decayed, as in GPT-2/nanoGPT.

    Args:
      learning_rate: peak learning rate (see ``make_schedule``).
      steps: total number of updates.
      warmup: warmup steps (int) or fraction of ``steps`` (float).
      weight_decay: decoupled weight decay coefficient.
      clip: maximum global gradient norm (Pascanu et al. 2013); None or 0 turns it off.
      b1, b2: Adam moment decay rates (0.95 for b2 as in GPT-3, stabler on tiny runs).
      end_fraction: final learning rate as a fraction of the peak.

    Returns:
      An ``optax.GradientTransformation``.
    """
    schedule = make_schedule(learning_rate, steps, warmup=warmup, end_fraction=end_fraction)
    decay_mask = lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)  # noqa: E731
    check_number("weight_decay", weight_decay, low=0.0)
    check_number("b1", b1, low=0.0, high=1.0, high_open=True)
    check_number("b2", b2, low=0.0, high=1.0, high_open=True)
    if clip is not None:
        check_number("clip", clip, low=0.0)
    adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask)
    if clip is None or clip == 0:
        return adamw
    if clip < 0:
        raise ValueError(f"clip must be >= 0 or None, got {clip}")
    return optax.chain(optax.clip_by_global_norm(clip), adamw)


