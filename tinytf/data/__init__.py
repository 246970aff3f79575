"""tinytf's data: synthetic tasks generated on device, plus one small real image set.

Every generator is a pure function of a JAX random key, with static keyword-only
configuration, returning a dict of batch-first arrays; it runs under ``jax.jit`` (close over
the configuration), so training data can be made inside a ``lax.scan`` training loop::

    import functools, jax
    from tinytf import data

    sample = functools.partial(data.copy_task, batch_size=32, length=16, vocab_size=64)
    batch = jax.jit(sample)(jax.random.key(0))  # tokens, targets, loss_mask

Called outside ``jax.jit`` (a held-out batch), a generator still runs as one compiled program
per configuration, not op by op (``_compiled.py``).

Modules, in reading order:
- ``sequences``: ``copy_task``, ``variable_copy_task``, ``associative_recall``, ``needle_haystack``,
  ``make_bigram_backcopy_task`` / ``sample_bigram_backcopy``, ``counting_task``;
- ``shapes``: ``shapes_classification``, ``shapes_detection``, ``bars_watermark``,
  ``feature_map_detection`` (synthetic DETR feature grids) and the drawing/box helpers;
- ``digits``: ``load_digits`` (scikit-learn's 8x8 digits, optional extra ``tinytf[data]``) and
  ``sample_batch``.
"""

from tinytf.data.digits import load_digits, sample_batch
from tinytf.data.sequences import (
    COUNTING_A,
    COUNTING_B,
    COUNTING_CLS,
    COUNTING_FIRST_FILLER,
    COUNTING_MASK,
    BigramBackcopyTask,
    associative_recall,
    copy_task,
    counting_task,
    make_bigram_backcopy_task,
    needle_haystack,
    sample_bigram_backcopy,
    variable_copy_task,
)
from tinytf.data.shapes import (
    SHAPE_NAMES,
    WATERMARK_MODES,
    bars_watermark,
    boxes_to_pixels,
    feature_map_detection,
    masks_to_boxes,
    render_shape_masks,
    shapes_classification,
    shapes_detection,
)

__all__ = [
    "COUNTING_A",
    "COUNTING_B",
    "COUNTING_CLS",
    "COUNTING_FIRST_FILLER",
    "COUNTING_MASK",
    "SHAPE_NAMES",
    "WATERMARK_MODES",
    "BigramBackcopyTask",
    "associative_recall",
    "bars_watermark",
    "boxes_to_pixels",
    "copy_task",
    "variable_copy_task",
    "counting_task",
    "feature_map_detection",
    "load_digits",
    "make_bigram_backcopy_task",
    "masks_to_boxes",
    "needle_haystack",
    "render_shape_masks",
    "sample_batch",
    "sample_bigram_backcopy",
    "shapes_classification",
    "shapes_detection",
]
