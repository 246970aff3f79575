"""The lesson runner: registry, claims, metrics.json, and the `tinytf lessons` / `tinytf lesson` CLI.

A lesson is a literate file `lessons/NN_name.py` (jupytext percent format) that
defines `run(quick, seed, out_dir, variant=None) -> LessonResult`. This module
knows the lessons by id, loads a lesson file by path when asked to run it (the
package never imports `lessons/` as a module), times it, and writes

    OUT/ID/metrics.json   {"lesson", "title", "seed", "quick", "variant", "runtime_s",
                           "metrics": {condition: {name: value}},
                           "claims": [{"id", "text", "value", "op", "threshold", "holds"}],
                           "figures": [file names]}
    OUT/ID/*.png          the figures it names.

A claim's `holds` is always computed here from value, op and threshold.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tinytf.apps.args import nonnegative_int, writable_dir
from tinytf.apps.claims import LessonResult


@dataclass(frozen=True)
class LessonInfo:
    id: str
    file: str
    title: str
    shows: str
    quick_seconds: float
    """Quick-mode wall seconds on a 2-core CPU with a cold compilation cache (measured in the test suite)."""
    variant: bool = False
    """Whether --variant changes the attention under study."""


LESSONS: dict[str, LessonInfo] = {}


def register(info: LessonInfo) -> None:
    LESSONS[info.id] = info


def _lessons_dir() -> Path:
    """lessons/ next to the package (editable install / repo checkout), or $TINYTF_LESSONS_DIR, or ./lessons."""
    candidates = [os.environ.get("TINYTF_LESSONS_DIR"), Path(__file__).resolve().parents[2] / "lessons",
                  Path.cwd() / "lessons"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise FileNotFoundError("cannot find the lessons/ folder: run from a tinytf checkout "
                            "(pip install -e .) or set TINYTF_LESSONS_DIR")


def load_lesson(lesson_id: str):
    """Load the lesson's file as a module (by path) and return it."""
    if lesson_id not in LESSONS:
        raise KeyError(f"unknown lesson {lesson_id!r}; available: {', '.join(LESSONS)}")
    path = _lessons_dir() / LESSONS[lesson_id].file
    spec = importlib.util.spec_from_file_location(f"tinytf_lesson_{lesson_id.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_lesson(lesson_id: str, *, quick: bool = False, seed: int = 0, out: str | Path = "runs",
               variant: str | None = None, run_fn=None) -> dict:
    """Run a lesson, write OUT/ID/metrics.json, and return its contents."""
    info = LESSONS[lesson_id]
    if variant is not None and not info.variant:
        raise ValueError(f"lesson {lesson_id!r} does not take --variant (its subject is not the attention variant)")
    out_dir = Path(out) / lesson_id
    out_dir.mkdir(parents=True, exist_ok=True)
    run_fn = run_fn or load_lesson(lesson_id).run
    t0 = time.perf_counter()
    result = run_fn(quick=quick, seed=seed, out_dir=out_dir, variant=variant)
    runtime = time.perf_counter() - t0
    if not isinstance(result, LessonResult):
        raise TypeError(f"lesson {lesson_id!r}: run() must return a LessonResult, got {type(result).__name__}")
    missing = [f for f in result.figures if not (out_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"lesson {lesson_id!r} names figures it did not write: {missing}")
    record = {
        "lesson": lesson_id, "title": info.title, "seed": seed, "quick": quick, "variant": variant,
        "runtime_s": round(runtime, 2),
        "metrics": {c: {k: _jsonable(v) for k, v in m.items()} for c, m in result.metrics.items()},
        "claims": [c.as_dict() for c in result.claims],
        "figures": list(result.figures),
        "notes": list(result.notes),
        "skipped": list(result.skipped),
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    return record


def _jsonable(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


def format_summary(record: dict, width: int = 100) -> str:
    """A readable summary of a lesson's metrics (per condition) and claims, lines of about `width` characters."""
    lines = [f"{record['title']}  [{record['lesson']}, seed {record['seed']}, "
             f"{'quick' if record['quick'] else 'full'}, {record['runtime_s']:.1f} s"
             + (f", variant {record['variant']}" if record["variant"] else "") + "]", ""]
    for cond, m in record["metrics"].items():  # one block per condition, full metric names, wrapped
        lines.append(cond)
        line = " "
        for name, value in m.items():
            item = f"  {name} = {value:.4g}" if isinstance(value, float) else f"  {name} = {value}"
            if len(line) + len(item) > width and line.strip():
                lines.append(line)
                line = " "
            line += item
        lines.append(line)
    if record["metrics"]:
        lines.append("")
    for c in record["claims"]:
        mark = "PASS" if c["holds"] else "FAIL"
        lines.append(f"[{mark}] {c['text']}  ({c['value']:.4g} {c['op']} {c['threshold']:g})")
    if record["figures"]:
        lines.append("")
        lines.append("figures: " + ", ".join(record["figures"]))
    return "\n".join(lines)


# ------------------------------------------------------------------------ registry
for _info in [
    LessonInfo("attention-basics", "01_attention_basics.py", "Attention from scratch",
               "maps on associative recall; why 1/sqrt(d); permutation equivariance", 18),
    LessonInfo("positions", "02_positions.py", "Where am I? Positional information",
               "no positions -> order-blind; sinusoidal/learned/RoPE/ALiBi fix it; RoPE is relative", 30),
    LessonInfo("heads", "03_heads.py", "Heads specialise, and many can go",
               "previous-token and induction heads; head importance and pruning curves", 43, variant=True),
    LessonInfo("rank-collapse", "04_rank_collapse.py", "Rank collapse in pure attention",
               "attention-only stacks lose rank doubly exponentially; skips fix it", 11),
    LessonInfo("entropy-collapse", "05_entropy_collapse.py", "Entropy collapse at high learning rate",
               "logits explode, entropy -> 0, training fails; QK-LayerNorm and sigma-Reparam fix it", 39, variant=True),
    LessonInfo("attention-sinks", "06_attention_sinks.py", "Attention sinks",
               "the first token soaks up attention; softmax1, sink logits, gates, sigmoid; StreamingLLM", 56,
               variant=True),
    LessonInfo("dilution", "07_dilution.py", "Attention dilution in long contexts",
               "needle mass falls with length; SSMax, log-n scaling and top-k keep it; a window loses far needles", 31, variant=True),
    LessonInfo("detr-queries", "08_detr_queries.py", "Why do all my DETR queries look alike?",
               "undifferentiated query maps: no positions, symmetry, short training; the fixes", 60, variant=True),
    LessonInfo("vit-attention", "09_vit_attention.py", "What ViT attention maps can explain",
               "raw attention vs rollout vs gradients, by deletion curves", 45, variant=True),
    LessonInfo("spurious-attention", "10_spurious_attention.py", "Attending to a watermark",
               "a spurious watermark gets the attention; decorrelation fixes it", 30, variant=True),
]:
    register(_info)


def available_lessons() -> list[LessonInfo]:
    """The registered lessons whose file exists."""
    try:
        root = _lessons_dir()
    except FileNotFoundError:
        return []
    return [info for info in LESSONS.values() if (root / info.file).is_file()]


# ----------------------------------------------------------------------------- CLI
def _cmd_lessons(args) -> int:
    rows = available_lessons()
    if not rows:
        print("no lessons found (run from a tinytf checkout, or set TINYTF_LESSONS_DIR)")
        return 1
    print(f"{'id':<20} {'quick':>7}  {'variant':<7}  title: what it shows")
    for info in rows:
        print(f"{info.id:<20} {info.quick_seconds:>5.0f} s  {'yes' if info.variant else '-':<7}  "
              f"{info.title}: {info.shows}")
    print("\nquick = wall seconds of a first quick run on a 2-core CPU, compilation included (the test suite's\n"
          "cold-cache run); later runs reuse JAX's compilation cache and take roughly half to two thirds of it.")
    print("run one: tinytf lesson ID [--quick] [--seed N] [--out DIR] [--variant V]")
    return 0


def _cmd_lesson(args) -> int:
    if args.id not in LESSONS:
        print(f"unknown lesson {args.id!r}; available: {', '.join(i.id for i in available_lessons())}",
              file=sys.stderr)
        return 2
    try:
        record = run_lesson(args.id, quick=args.quick, seed=args.seed, out=args.out, variant=args.variant)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(record))
    print(f"\nwrote {Path(args.out) / args.id / 'metrics.json'} and {len(record['figures'])} figure(s)")
    return 0 if all(c["holds"] for c in record["claims"]) else 3


def register_cli(sub) -> None:
    p = sub.add_parser("lessons", help="list the lessons")
    p.set_defaults(func=_cmd_lessons)
    p = sub.add_parser("lesson", help="run one lesson and write metrics.json and figures")
    p.add_argument("id", help="lesson id, see `tinytf lessons`")
    p.add_argument("--quick", action="store_true", help="quick mode (well under a minute on a 2-core CPU)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", type=writable_dir, default="runs", help="output directory (default runs/); writes OUT/ID/")
    p.add_argument("--variant", default=None,
                   help="attention variant for lessons about attention: a name (see tinytf.variants) "
                        "or module:function")
    p.set_defaults(func=_cmd_lesson)


def main_for(file: str, run_fn) -> None:
    """`python lessons/NN_name.py [--quick] [--seed N] [--out DIR] [--variant V]`."""
    import argparse

    from tinytf.config import enable_compilation_cache

    lesson_id = next((i.id for i in LESSONS.values() if i.file == Path(file).name), None)
    if lesson_id is None:
        raise KeyError(f"{file} is not a registered lesson")
    parser = argparse.ArgumentParser(description=LESSONS[lesson_id].title)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--out", type=writable_dir, default="runs")
    parser.add_argument("--variant", default=None)
    args, _ = parser.parse_known_args()  # tolerate Jupyter's own arguments
    enable_compilation_cache()
    record = run_lesson(lesson_id, quick=args.quick, seed=args.seed, out=args.out, variant=args.variant,
                        run_fn=run_fn)
    print(format_summary(record))


__all__ = ["LessonInfo", "LESSONS", "run_lesson", "load_lesson", "format_summary",
           "available_lessons", "main_for"]
