"""The student-side bundle: what tinytf ships so that students can grade their work.

A wheel of tinytf holds no reference solution, no mutant program and no input
generator. What a student needs instead is precomputed from the instructor side
(`instructor.py`) and shipped in ``tinytf/grading/data/``:

  manifest.json  per exercise: number, slug, title, lesson, functions, the stub's
                 text (so `tinytf exercises init` works from a wheel), every
                 check's public fields (name, function, hidden, points, tolerances,
                 judge), the classic mistakes' messages, and for each visible check
                 where its inputs, expected outputs and the mutants' outputs are;
  visible.npz    those arrays (loaded with allow_pickle=False).

Hidden checks have no entry: their inputs come from the assignment secret, which
only the instructor holds. `tinytf exercises bundle` rebuilds both files from a
checkout; tests/test_grading.py checks that the shipped bundle is up to date.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytf.grading.core import Check, Exercise, Mutant

DATA_DIR = Path(__file__).with_name("data")
FORMAT = 1


class BundleError(RuntimeError):
    """The shipped bundle is missing or unreadable (a broken installation)."""


@dataclass(frozen=True)
class Visible:
    """One visible check, precomputed: inputs, expected outputs (None for a `raises` check), mutants' outputs."""

    inputs: dict
    expected: tuple | None
    mutants: dict  # mutant id -> outputs tuple, or None where the mutant raised


@dataclass(frozen=True)
class Bundle:
    exercises: tuple[Exercise, ...]  # public: checks without generators, mutants without programs
    stubs: dict  # exercise id -> stub text
    visible: dict  # (exercise id, check index) -> Visible

    def exercise(self, exercise_id: str) -> Exercise:
        return next(e for e in self.exercises if e.id == exercise_id)


class BundleOracle:
    """Expected values and mutant outputs of the visible checks, from the bundle (student side)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    def expected(self, exercise: Exercise, index: int, inputs) -> tuple:
        entry = self.bundle.visible[(exercise.id, index)]
        return entry.expected, len(entry.expected) > 1

    def mutant_outputs(self, exercise: Exercise, index: int, inputs) -> dict:
        return dict(self.bundle.visible[(exercise.id, index)].mutants)


# ----------------------------------------------------------------------- public descriptions
def public_entry(exercise: Exercise) -> dict:
    """The fields of an exercise students may see (no generators, no mutant programs)."""
    return {
        "number": exercise.number,
        "slug": exercise.slug,
        "title": exercise.title,
        "lesson": exercise.lesson,
        "functions": list(exercise.functions),
        "checks": [c.public() for c in exercise.checks],
        "mistakes": [{"id": m.id, "mistake": m.mistake} for m in exercise.mutants],
    }


def _public_exercise(entry: dict) -> Exercise:
    checks = tuple(
        Check(
            name=c["name"],
            function=c["function"],
            hidden=c["hidden"],
            points=c["points"],
            rtol=c["rtol"],
            atol=c["atol"],
            raises=c["raises"],
            judge=c["judge"],
            outputs=tuple(c["outputs"]),
        )
        for c in entry["checks"]
    )
    mutants = tuple(Mutant(id=m["id"], mistake=m["mistake"]) for m in entry["mistakes"])
    return Exercise(
        number=entry["number"],
        slug=entry["slug"],
        title=entry["title"],
        lesson=entry["lesson"],
        functions=tuple(entry["functions"]),
        checks=checks,
        mutants=mutants,
    )


# ----------------------------------------------------------------------- reading
def _decode_inputs(spec: dict, arrays) -> dict:
    return {k: (np.array(arrays[v["array"]]) if "array" in v else v["value"]) for k, v in spec.items()}


def _decode_outputs(keys, arrays):
    return None if keys is None else tuple(np.array(arrays[k]) for k in keys)


def read_bundle(directory) -> Bundle:
    """Read a bundle folder (manifest.json + visible.npz)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        with np.load(directory / "visible.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise BundleError(
            f"the exercise bundle in {directory} cannot be read ({err}); reinstall tinytf, or in a checkout "
            "rebuild it with `tinytf exercises bundle`"
        ) from err
    if manifest.get("format") != FORMAT:
        raise BundleError(f"the exercise bundle in {directory} has format {manifest.get('format')}, expected {FORMAT}")
    exercises, stubs, visible = [], {}, {}
    for entry in manifest["exercises"]:
        ex = _public_exercise(entry)
        exercises.append(ex)
        stubs[ex.id] = entry["stub"]
        for index, v in entry["visible"].items():
            visible[(ex.id, int(index))] = Visible(
                inputs=_decode_inputs(v["inputs"], arrays),
                expected=_decode_outputs(v["expected"], arrays),
                mutants={m: _decode_outputs(keys, arrays) for m, keys in v["mutants"].items()},
            )
    return Bundle(tuple(exercises), stubs, visible)


@functools.lru_cache(maxsize=1)
def shipped_bundle() -> Bundle:
    """The bundle installed with tinytf."""
    return read_bundle(DATA_DIR)


# ----------------------------------------------------------------------- building (instructor side)
def build_bundle(instructor, stubs_dir, out_dir) -> Path:
    """Precompute the student-side bundle from an instructor folder and the stubs; returns `out_dir`.

    Args:
      instructor: an `instructor.Instructor`.
      stubs_dir: the folder with the student stubs ``NN_slug.py``.
      out_dir: where manifest.json and visible.npz are written (created if needed).
    """
    from tinytf.grading.instructor import draw_inputs  # the instructor side uses the bundle's types

    stubs_dir, out_dir = Path(stubs_dir), Path(out_dir)
    oracle = instructor.oracle()
    arrays: dict[str, np.ndarray] = {}

    def put(key, value):
        arrays[key] = np.asarray(value)
        return key

    def outputs(prefix, outs):
        return None if outs is None else [put(f"{prefix}/{j}", o) for j, o in enumerate(outs)]

    entries = []
    for ex in instructor.exercises:
        entry = public_entry(ex)
        entry["stub"] = (stubs_dir / ex.filename).read_text()
        entry["visible"] = {}
        for i, check in enumerate(ex.checks):
            if check.hidden:
                continue
            inputs = draw_inputs(ex, i, None)
            spec = {}
            for name, value in inputs.items():
                if isinstance(value, np.generic):
                    value = value.item()
                if isinstance(value, np.ndarray):
                    spec[name] = {"array": put(f"{ex.id}/{i}/in/{name}", value)}
                else:
                    spec[name] = {"value": value}
            expected, mutants = None, {}
            if not check.raises:
                expected = outputs(f"{ex.id}/{i}/expected", oracle.expected(ex, i, inputs)[0])
                for mutant_id, outs in oracle.mutant_outputs(ex, i, inputs).items():
                    mutants[mutant_id] = outputs(f"{ex.id}/{i}/mutant/{mutant_id}", outs)
            entry["visible"][str(i)] = {"inputs": spec, "expected": expected, "mutants": mutants}
        entries.append(entry)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps({"format": FORMAT, "exercises": entries}, indent=1) + "\n")
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (out_dir / "visible.npz").write_bytes(buf.getvalue())
    return out_dir


def check_matches(bundle: Bundle, instructor) -> None:
    """Raise BundleError when the instructor's catalogue describes other checks than the bundle."""
    shipped = [public_entry(e) for e in bundle.exercises]
    mine = [public_entry(e) for e in instructor.exercises]
    if shipped != mine:
        differ = [m["slug"] for s, m in zip(shipped, mine) if s != m] or ["the list of exercises"]
        raise BundleError(
            f"the instructor folder {instructor.root} describes other checks than the bundle shipped with tinytf "
            f"({', '.join(differ)}): students would get feedback on other checks. Rebuild the bundle in a "
            "checkout with `tinytf exercises bundle` and ship it"
        )
