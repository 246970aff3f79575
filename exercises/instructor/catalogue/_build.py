"""Builders for the catalogue's declarations: checks on one function, mutants.

`calls(function, **defaults)` gives the checks on one student function, so that an
exercise lists each check as a name and an input generator:

    on_softmax = calls("softmax")
    on_softmax.check("axis=1", lambda rng: {...})        # visible
    on_softmax.hidden("axis=0 with a mask", _gen_axis0)  # named "hidden: axis=0 with a mask"

`patched` and `rewritten` build the two kinds of mutant: the reference with text
substitutions, or with a function rewritten at the end of the file.
"""

from __future__ import annotations

from typing import Callable

from tinytf.grading.core import Check, Exercise, Mutant

HIDDEN_PREFIX = "hidden: "


class calls:  # noqa: N801 - reads as a builder: on_softmax = calls("softmax")
    """Check builders for one function; `defaults` (atol, outputs, ...) apply to each check."""

    def __init__(self, function: str, **defaults):
        self.function = function
        self.defaults = defaults

    def check(self, name: str, inputs: Callable, **fields) -> Check:
        """A visible check: students see its name, inputs and expected values."""
        return Check(name=name, function=self.function, inputs=inputs, **{**self.defaults, **fields})

    def hidden(self, name: str, inputs: Callable, **fields) -> Check:
        """A hidden check: inputs drawn from the assignment secret, only pass/fail shown."""
        return self.check(HIDDEN_PREFIX + name, inputs, hidden=True, **fields)


def patched(id: str, mistake: str, *substitutions: tuple[str, str]) -> Mutant:  # noqa: A002 - Mutant's field
    """The reference with each (old, new) substitution applied (each old text occurs once)."""
    return Mutant(id=id, mistake=mistake, patch=tuple(substitutions))


def rewritten(id: str, mistake: str, source: str) -> Mutant:  # noqa: A002 - Mutant's field
    """The reference with `source` appended (a function redefined with the mistake)."""
    return Mutant(id=id, mistake=mistake, append=source)


# Mistakes that several exercises share, with one wording.
NO_SCALE = "the logits were not scaled: divide q·k by sqrt(H), H the head dim"
IGNORES_BASE = "the `base` argument was ignored (10000 was used)"


def exercise(
    id: str,  # noqa: A002 - Exercise.id's form
    title: str,
    lesson: str,
    checks: tuple[Check, ...],
    mutants: tuple[Mutant, ...],
) -> Exercise:
    """Exercise ``NN_slug`` (the student file ``NN_slug.py``) for lesson `lesson`; the
    functions the student writes are those the checks call, in order of first use."""
    number, slug = id.split("_", 1)
    functions = tuple(dict.fromkeys(c.function for c in checks))
    return Exercise(
        number=int(number), slug=slug, title=title, lesson=lesson, functions=functions, checks=checks, mutants=mutants
    )
