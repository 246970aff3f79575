"""Training: ``fit`` and what it needs, one concept per file.

Reading order:
  losses.py      — ``cross_entropy``, ``accuracy`` and ``z_loss``, masked, in float32;
  optim.py       — ``make_optimizer``: AdamW + warmup/cosine schedule + clipping;
  history.py     — ``History``: what fit records;
  checkpoints.py — orbax save / restore;
  step.py        — one training step and the on-device loop over many (the device side);
  distributed.py — many devices and machines: the global mesh, replicated or FSDP state;
  loop.py        — ``fit``: the host side, top to bottom;
  qk_clip.py     — QK-clip (Kimi K2's MuonClip): a ``fit(post_update=...)`` hook;
  parallel.py    — ``parallel_map``, ``parallel_grid``: independent runs side by side, one per
                   core, same numbers.
"""

from tinytf.train.distributed import host_values, initialize_distributed
from tinytf.train.history import History
from tinytf.train.loop import fit
from tinytf.train.losses import accuracy, cross_entropy, z_loss
from tinytf.train.optim import make_optimizer, make_schedule
from tinytf.train.parallel import parallel_grid, parallel_map
from tinytf.train.qk_clip import qk_clip, with_head_max_logits

__all__ = ["fit", "initialize_distributed", "host_values", "History", "make_optimizer", "make_schedule",
           "cross_entropy", "accuracy", "z_loss", "qk_clip", "with_head_max_logits", "parallel_map",
           "parallel_grid"]
