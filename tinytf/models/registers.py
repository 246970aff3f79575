"""Register tokens for a language model: learnable placeholders prepended to every sequence.

Darcet et al. 2024 ("Vision Transformers Need Registers", ICLR 2024) add a few learnable
tokens that attention may use as scratch space; StreamingLLM (Xiao et al. 2023) trains a
"learnable sink token" the same way. `CausalLM` needs no option for it: give the model
`count` extra token ids (vocab_size + count) and prepend them to every batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp


def prepend_registers(batch: Mapping, first_id: int, count: int, *, token_keys=("tokens", "targets"),
                      keys=("tokens", "targets", "loss_mask", "trigger")) -> dict:
    """Prepend `count` register tokens (ids first_id .. first_id + count - 1) to every sequence.

    Keys in `token_keys` get the register ids (so targets on registers are the registers
    themselves); the other `keys` (masks, flags) get zeros, i.e. no loss and no selection on
    the registers. Only `keys` are returned.

    Args:
      batch: {key: (B, T)} arrays.
      first_id: the first register token id (usually the vocabulary size without registers).
      count: number of registers (>= 0; 0 returns the selected keys unchanged in content).
      token_keys, keys: see above.

    Returns:
      {key: (B, count + T)} for every key in `keys`.
    """
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch has no key(s) {missing}; it has {sorted(batch)}")
    B = batch[keys[0]].shape[0]
    regs = jnp.broadcast_to(jnp.arange(first_id, first_id + count, dtype=jnp.int32), (B, count))
    out = {}
    for key in keys:
        x = jnp.asarray(batch[key])
        if x.ndim != 2 or x.shape[0] != B:
            raise ValueError(f"batch[{key!r}] has shape {x.shape}: expected (B, T) with B = {B}")
        pad = regs.astype(x.dtype) if key in token_keys else jnp.zeros((B, count), x.dtype)
        out[key] = jnp.concatenate([pad, x], 1)  # (B, count + T)
    return out


__all__ = ["prepend_registers"]
