"""The instructor side: reference solutions, input generators, mutants and the assignment secret.

None of this is installed with tinytf. It lives in the instructor folder, in a
checkout ``exercises/instructor/`` (see its README), which `tinytf exercises init`
never copies and the wheel does not contain:

    instructor/
      catalogue/   the exercises: every check with its input generator, the mutants
      reference/   exNN_slug.py, the reference solutions (numpy, float64)

The grader finds it through `--instructor DIR`, else ``$TINYTF_INSTRUCTOR_DIR``,
else ``exercises/instructor`` next to the package in a source checkout.

Hidden inputs come from the assignment secret, a string the instructor keeps
(``$TINYTF_GRADING_SECRET`` or `--secret-file`), never in the stubs: the seed of
hidden check i of exercise E is HMAC-SHA256(secret, "E/i/name"), so the same
submission always gets the same inputs and grade, and another secret gives other
inputs. Visible checks use fixed seeds; their inputs and expected values are
shipped to students in the bundle (`bundle.py`).
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytf.grading.core import Exercise, ReferenceOracle
from tinytf.grading.sandbox import CHECKOUT_INSTRUCTOR_DIR

SECRET_ENV = "TINYTF_GRADING_SECRET"
INSTRUCTOR_ENV = "TINYTF_INSTRUCTOR_DIR"
MIN_SECRET_CHARS = 16


class InstructorError(ValueError):
    """The instructor side is missing or incomplete (a usage error with a clear message)."""


def near_miss(path: Path) -> str:
    """' (did you mean SIBLING?)' for the sibling whose name is closest to a missing path's, else ''."""
    parent = path.parent
    names = [p.name for p in parent.iterdir()] if parent.is_dir() else []
    near = difflib.get_close_matches(path.name, names, n=1)
    return f" (did you mean {parent / near[0]}?)" if near else ""


@dataclass(frozen=True)
class Instructor:
    """A loaded instructor folder: the full catalogue and the reference sources."""

    root: Path
    exercises: tuple[Exercise, ...]
    sources: dict  # exercise id -> reference source text

    def oracle(self) -> ReferenceOracle:
        return ReferenceOracle(self.sources)

    def exercise(self, exercise_id: str) -> Exercise:
        return next(e for e in self.exercises if e.id == exercise_id)

    def reference_path(self, exercise: Exercise) -> Path:
        return self.root / "reference" / exercise.reference_name


def find_instructor_dir(explicit=None) -> Path | None:
    """The instructor folder: `explicit`, else $TINYTF_INSTRUCTOR_DIR, else the checkout's; None if none.

    An explicit folder (argument or environment) that does not hold an instructor
    side is an error; the checkout default is used only when it exists.
    """
    chosen = explicit if explicit is not None else os.environ.get(INSTRUCTOR_ENV) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not (path / "catalogue" / "__init__.py").is_file() or not (path / "reference").is_dir():
            source = "--instructor" if explicit is not None else f"${INSTRUCTOR_ENV}"
            raise InstructorError(
                f"{source} {path} is not an instructor folder: expected catalogue/__init__.py and reference/ "
                "inside it (in a tinytf checkout: exercises/instructor)"
            )
        return path.resolve()
    if (CHECKOUT_INSTRUCTOR_DIR / "catalogue" / "__init__.py").is_file():
        return CHECKOUT_INSTRUCTOR_DIR
    return None


_LOADED: dict[Path, Instructor] = {}


def load_instructor(root) -> Instructor:
    """Import the instructor folder's catalogue (as a package named after its path) and read the references."""
    root = Path(root).resolve()
    if root in _LOADED:
        return _LOADED[root]
    name = "tinytf_instructor_" + hashlib.sha256(str(root).encode()).hexdigest()[:12]
    if name not in sys.modules:  # a package with no code of its own, whose sub-packages live in `root`
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    catalogue = importlib.import_module(f"{name}.catalogue")
    exercises = tuple(catalogue.EXERCISES)
    sources = {}
    for ex in exercises:
        path = root / "reference" / ex.reference_name
        if not path.is_file():
            raise InstructorError(f"the instructor folder {root} has no reference solution {path.name} for {ex.id}")
        sources[ex.id] = path.read_text()
    instructor = Instructor(root, exercises, sources)
    _LOADED[root] = instructor
    return instructor


# ----------------------------------------------------------------------- the secret
def read_secret(secret_file=None) -> bytes | None:
    """The assignment secret from `secret_file`, else $TINYTF_GRADING_SECRET; None when neither is set."""
    if secret_file is not None:
        path = Path(secret_file).expanduser()
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise InstructorError(
                f"--secret-file {path}: no such file{near_miss(path)}; a new secret (`tinytf exercises secret PATH`) "
                "draws other hidden inputs than the one this assignment was graded with"
            ) from None
        except OSError as err:
            raise InstructorError(f"--secret-file {path}: cannot read it ({err.strerror})") from None
        source = f"the secret file {path}"
    else:
        text = os.environ.get(SECRET_ENV, "").strip()
        if not text:
            return None
        source = f"${SECRET_ENV}"
    if len(text) < MIN_SECRET_CHARS:
        raise InstructorError(
            f"{source} holds {len(text)} characters; a secret needs at least {MIN_SECRET_CHARS} so that students "
            "cannot guess it (make one with `tinytf exercises secret PATH`)"
        )
    return text.encode()


def new_secret() -> str:
    """A fresh random secret: 64 hex characters (256 bits)."""
    import secrets

    return secrets.token_hex(32)


def secret_fingerprint(secret: bytes) -> str:
    """A short public name for a secret (to tell runs apart without revealing it)."""
    return hmac.new(secret, b"tinytf-grading/fingerprint", hashlib.sha256).hexdigest()[:8]


def hidden_seed(secret: bytes, exercise: Exercise, index: int) -> np.random.SeedSequence:
    """The seed of hidden check `index` of `exercise`: HMAC-SHA256(secret, "id/index/name")."""
    message = f"tinytf-grading/1/{exercise.id}/{index}/{exercise.checks[index].name}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return np.random.SeedSequence(int.from_bytes(digest, "big"))


def visible_seed(exercise: Exercise, index: int) -> np.random.SeedSequence:
    """The fixed seed of visible check `index` (its inputs are public)."""
    return np.random.SeedSequence([exercise.number, index])


def draw_inputs(exercise: Exercise, index: int, secret: bytes | None) -> dict:
    """The inputs of one check: a fixed seed when visible, the secret's seed when hidden."""
    check = exercise.checks[index]
    if check.hidden:
        if secret is None:
            raise InstructorError(f"hidden check {check.name!r} of {exercise.id} needs the assignment secret")
        seed = hidden_seed(secret, exercise, index)
    else:
        seed = visible_seed(exercise, index)
    return check.inputs(np.random.default_rng(seed))
