"""The exercises in course order, with their checks (and input generators) and mutants.

Instructor side only (not installed, never copied to students): the generators of the
hidden checks and the mutant programs are as much an answer key as the references.
Students get the public part (names, points, tolerances, the mistakes' messages) and
the visible checks' data through the bundle (tinytf/grading/bundle.py).

To add an exercise: write the student stub ``exercises/NN_slug.py`` (signature,
docstring = the spec, body raising NotImplementedError), the reference
``reference/exNN_slug.py``, and an `exercise(...)` entry in one of these modules listing
visible checks, hidden checks (at least half of the points) and mutants, written with
the builders of `_build.py` (`calls(function).check/.hidden`, `patched`, `rewritten`); add it to
EXERCISES below; run `tinytf exercises bundle`. tests/test_grading.py checks the rest
(the reference scores full marks, the stub zero, every mutant loses points with its
message on both sides, the bundle is up to date).
"""

from .basics import ATTENTION, MASKS, SOFTMAX
from .diagnostics import ENTROPY, RANK, SINKS, SOFTMAX1, SSMAX
from .positions_heads import HEADS, ROPE, SINUSOIDAL
from .vision import GIOU, MATCHING, PATCHES, ROLLOUT

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
