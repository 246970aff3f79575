"""The exercises in course order, with their checks and mutants.

To add an exercise: write the student stub ``exercises/NN_slug.py`` (signature,
docstring = the spec, body raising NotImplementedError), the reference
``tinytf/grading/reference/exNN_slug.py``, and an `Exercise` entry in one of these
modules listing visible checks, hidden checks and mutants; then add it to
EXERCISES below. tests/test_grading.py checks the rest (the reference scores full
marks, the stub zero, every mutant loses points with its message).
"""

from tinytf.grading.catalogue.basics import ATTENTION, MASKS, SOFTMAX
from tinytf.grading.catalogue.diagnostics import ENTROPY, RANK, SINKS, SOFTMAX1, SSMAX
from tinytf.grading.catalogue.positions_heads import HEADS, ROPE, SINUSOIDAL
from tinytf.grading.catalogue.vision import GIOU, MATCHING, PATCHES, ROLLOUT

EXERCISES = (
    SOFTMAX,
    ATTENTION,
    MASKS,
    SINUSOIDAL,
    ROPE,
    HEADS,
    RANK,
    ENTROPY,
    SINKS,
    SOFTMAX1,
    SSMAX,
    GIOU,
    MATCHING,
    PATCHES,
    ROLLOUT,
)

__all__ = ["EXERCISES"]
