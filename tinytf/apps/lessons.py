"""The lesson runner: registry, run folders, metrics.json, notebooks, and the `tinytf lessons` / `tinytf lesson` CLI.

A lesson is a literate file `lessons/NN_name.py` (jupytext percent format) that
defines `run(quick, seed, out_dir, variant=None) -> LessonResult`. This module
knows the lessons by id, loads a lesson file by path when asked to run it (the
package never imports `lessons/` as a module), times it, and writes one new folder
per run; a run never overwrites another:

    OUT/ID/<date>-<time>_seed<S>_<quick|full>[_<variant>]/
        metrics.json  {"lesson", "title", "seed", "quick", "variant", "runtime_s",
                       "metrics": {condition: {name: value}},
                       "claims": [{"id", "text", "value", "op", "threshold", "holds"}],
                       "figures": [file names], "notes": [...],
                       "skipped": [conditions quick mode did not run, and why],
                       "command", "started", "folder", "versions": {tinytf, jax, flax, ...}}
        *.png         the figures it names
        NN_name.ipynb the executed notebook (`tinytf lesson ID --notebook`)
    OUT/ID/latest     a link to the newest finished run (and latest.txt, its folder name,
                      where the file system has no links)

OUT is `runs/` unless `--out` says otherwise. A claim's `holds` is always computed here
from value, op and threshold.

The same lesson runs three ways, all through `run_lesson`:
  tinytf lesson ID [--quick] [--notebook]     the CLI (below)
  python lessons/NN_name.py [--quick]         the file as a script (`main_for`)
  a notebook (jupytext -> Jupyter, nbclient, papermill): its `parameters` cell chooses quick
  mode, seed and variant ($TINYTF_QUICK=1 also chooses quick mode); `main_for` shows the
  table and the figures inline and saves them too.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from tinytf.apps.args import nonnegative_int, positive_float, writable_dir
from tinytf.apps.claims import LessonResult
from tinytf.apps.notebook import MissingNotebookTools, run_notebook
from tinytf.progress import labelled, progress_enabled, say
from tinytf.variant_contract import load_variant


@dataclass(frozen=True)
class LessonInfo:
    id: str
    file: str
    title: str
    shows: str
    quick_seconds: float
    """Quick-mode wall seconds on an idle 2-core CPU with an empty compilation cache (`tinytf bench lessons`)."""
    variant: bool = False
    """Whether --variant changes the attention under study."""
    warm_seconds: float | None = None
    """The same with the compilation cache filled by a first run (`tinytf bench lessons` measures both)."""
    no_variant_reason: str = ""
    """Why --variant cannot apply (said by the refusal); empty: the generic reason."""


LESSONS: dict[str, LessonInfo] = {}


def register(info: LessonInfo) -> None:
    LESSONS[info.id] = info


def lessons_dir() -> Path:
    """lessons/ next to the package (editable install / repo checkout), or $TINYTF_LESSONS_DIR, or ./lessons."""
    candidates = [os.environ.get("TINYTF_LESSONS_DIR"), Path(__file__).resolve().parents[2] / "lessons",
                  Path.cwd() / "lessons"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise FileNotFoundError("cannot find the lessons/ folder: run from a tinytf checkout "
                            "(pip install -e .) or set TINYTF_LESSONS_DIR")


def lesson_path(lesson_id: str) -> Path:
    """The lesson's file, lessons/NN_name.py."""
    return lessons_dir() / lesson_info(lesson_id).file


def lesson_info(lesson_id: str) -> LessonInfo:
    if lesson_id not in LESSONS:
        raise KeyError(f"unknown lesson {lesson_id!r}; available: {', '.join(LESSONS)}")
    return LESSONS[lesson_id]


def load_lesson(lesson_id: str):
    """Load the lesson's file as a module (by path) and return it."""
    path = lesson_path(lesson_id)
    spec = importlib.util.spec_from_file_location(f"tinytf_lesson_{lesson_id.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------- run folders
def new_run_dir(lesson_id: str, *, out: str | Path = "runs", seed: int = 0, quick: bool = False,
                variant: str | None = None) -> Path:
    """Create and return a new, empty folder OUT/ID/<date>-<time>_seed<S>_<mode>[_<variant>]/.

    Two runs in the same second get "-2", "-3", ...: an existing folder is never reused.
    """
    name = f"{time.strftime('%Y%m%d-%H%M%S')}_seed{seed}_{'quick' if quick else 'full'}"
    if variant:
        name += "_" + re.sub(r"[^A-Za-z0-9._]+", "-", variant).strip("-")
    parent = Path(out) / lesson_id
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"cannot make a new run folder for {name!r} in {parent}")


def mark_latest(run_dir: str | Path) -> None:
    """Point RUN_DIR/../latest at RUN_DIR (a relative link), and write its name to RUN_DIR/../latest.txt."""
    run_dir = Path(run_dir)
    parent = run_dir.parent
    (parent / "latest.txt").write_text(run_dir.name + "\n")
    link, tmp = parent / "latest", parent / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        if link.exists() and not link.is_symlink():  # a folder or file of the user's: leave it alone
            tmp.unlink()
            return
        os.replace(tmp, link)  # atomic: readers see the old run or the new one
    except OSError:  # no symbolic links here (e.g. Windows without the privilege): latest.txt says it
        if tmp.is_symlink():
            tmp.unlink()


def latest_run(lesson_id: str, out: str | Path = "runs") -> Path | None:
    """The newest finished run folder of a lesson under OUT (through `latest`, else `latest.txt`), or None."""
    parent = Path(out) / lesson_id
    if (parent / "latest").is_dir():
        return (parent / "latest").resolve()
    if (parent / "latest.txt").is_file():
        path = parent / (parent / "latest.txt").read_text().strip()
        return path if path.is_dir() else None
    return None


def _claim_empty(run_dir: Path) -> Path:
    """Create run_dir, or accept it if it exists and is empty; refuse to write into a non-empty folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run folder {str(run_dir)!r} is a file: expected a new or empty folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise ValueError(f"run folder {str(run_dir)!r} is not empty: a run never overwrites another; "
                         "choose a new folder, or leave it out for a new one under OUT/ID/")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def versions() -> dict[str, str]:
    """What produced a run: package versions, Python, platform, JAX backend, and the checkout's commit."""
    import jax

    found = {}
    for name in ("tinytf", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    found["platform"] = platform.platform()
    found["jax_backend"] = f"{jax.default_backend()} ({jax.devices()[0].device_kind})"
    commit = _git_commit()
    if commit:
        found["tinytf_commit"] = commit
    return found


def _git_commit() -> str | None:
    """The commit of the lessons' checkout ("+ changes" when files differ from it), or None outside git."""
    try:
        where = str(lessons_dir())
        head = subprocess.run(["git", "-C", where, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError, FileNotFoundError):
        return None
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def quick_from_env() -> bool:
    """$TINYTF_QUICK=1 (anything but "" or "0") asks for quick mode."""
    return os.environ.get("TINYTF_QUICK", "") not in ("", "0")


# ------------------------------------------------------------------------ the runner
def run_lesson(lesson_id: str, *, quick: bool = False, seed: int = 0, out: str | Path = "runs",
               run_dir: str | Path | None = None, variant: str | None = None, run_fn=None,
               command: str | None = None) -> dict:
    """Run a lesson into a new run folder, write its metrics.json, and return its contents.

    Args:
      out: the runs root: the run goes to a new folder OUT/ID/<date>-<time>_seed<S>_<mode>/, and
        OUT/ID/latest then points to it.
      run_dir: write exactly here instead (a new or empty folder; `latest` is not touched).
      run_fn: the lesson's run function (default: load it from lessons/).
      command: what the user ran, for metrics.json (default: this process's command line).
    """
    info = lesson_info(lesson_id)
    if variant is not None and not info.variant:
        takes = ", ".join(i.id for i in LESSONS.values() if i.variant)
        raise ValueError(f"lesson {lesson_id!r} does not take --variant: "
                         f"{info.no_variant_reason or 'its subject is not the attention variant'}. "
                         f"Lessons that do: {takes}; or score the variant on every phenomenon with "
                         f"`tinytf compare {variant}`")
    if variant is not None:
        load_variant(variant)  # the contract, in seconds, before anything trains
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    fresh = run_dir is None
    out_dir = (new_run_dir(lesson_id, out=out, seed=seed, quick=quick, variant=variant) if fresh
               else _claim_empty(Path(run_dir)))
    run_fn = run_fn or load_lesson(lesson_id).run
    say(f"{lesson_id}: {'quick' if quick else 'full'} mode, seed {seed}"
        + (f", variant {variant}" if variant else "") + f" -> {out_dir}")
    t0 = time.perf_counter()
    with labelled(lesson_id):
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
        "command": command or _this_command(),
        "started": started,
        "folder": out_dir.name,
        "versions": versions(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    if fresh:
        mark_latest(out_dir)
    return record


def _this_command() -> str:
    """This process's command line, as the user would type it."""
    argv = sys.argv or [""]
    prog = Path(argv[0]).name
    if prog == "tinytf":
        return shlex.join(["tinytf", *argv[1:]])
    if prog.endswith(".py") and prog not in ("__main__.py", "ipykernel_launcher.py"):
        return shlex.join(["python", argv[0], *argv[1:]])
    return f"from Python ({shlex.join(argv)})"


def _jsonable(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


def format_summary(record: dict, width: int = 100) -> str:
    """A readable summary of a lesson's metrics (per condition), claims, skipped conditions and notes."""
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
    for title, items in (("not run in this mode", record.get("skipped", [])), ("notes", record.get("notes", []))):
        if items:
            lines += ["", title + ":"] + [_wrap("  - " + item, width, "    ") for item in items]
    if record["figures"]:
        lines.append("")
        lines.append("figures: " + ", ".join(record["figures"]))
    return "\n".join(lines)


def _wrap(text: str, width: int, indent: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=False)) or text


def summary_markdown(record: dict) -> str:
    """The summary as Markdown tables (claims, metrics per condition), for notebooks and the course site."""
    def cell(v):
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|")

    mode = "quick" if record["quick"] else "full"
    lines = [f"**Measured in this run** ({mode} mode, seed {record['seed']}, {record['runtime_s']:.0f} s"
             + (f", variant `{record['variant']}`" if record["variant"] else "") + ")", "",
             "| | claim | measured | threshold |", "|---|---|---|---|"]
    for c in record["claims"]:
        lines.append(f"| {'PASS' if c['holds'] else '**FAIL**'} | {cell(c['text'])} | {c['value']:.4g} "
                     f"| {c['op']} {c['threshold']:g} |")
    names = list(dict.fromkeys(k for m in record["metrics"].values() for k in m))
    if names:
        lines += ["", "| condition | " + " | ".join(cell(n) for n in names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for cond, m in record["metrics"].items():
            lines.append(f"| {cell(cond)} | " + " | ".join(cell(m[n]) if n in m else "" for n in names) + " |")
    if record.get("skipped"):
        lines += ["", "**Not run in this mode:**", ""] + [f"- {cell(s)}" for s in record["skipped"]]
    if record.get("notes"):
        lines += ["", "**Notes:**", ""] + [f"- {cell(s)}" for s in record["notes"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------ registry
for _info in [
    LessonInfo("attention-basics", "01_attention_basics.py", "Attention from scratch",
               "maps on associative recall; why 1/sqrt(d); permutation equivariance", 12, warm_seconds=8),
    LessonInfo("positions", "02_positions.py", "Where am I? Positional information",
               "no positions -> order-blind; sinusoidal/learned/RoPE/ALiBi fix it; RoPE is relative", 22, warm_seconds=10),
    LessonInfo("heads", "03_heads.py", "Heads specialise, and many can go",
               "previous-token and induction heads; head importance and pruning curves", 29, variant=True, warm_seconds=19),
    LessonInfo("rank-collapse", "04_rank_collapse.py", "Rank collapse in pure attention",
               "attention-only stacks lose rank doubly exponentially; skips fix it", 9, warm_seconds=5),
    LessonInfo("entropy-collapse", "05_entropy_collapse.py", "Entropy collapse at high learning rate",
               "logits explode, entropy -> 0, training fails; QK-LayerNorm, sigma-Reparam, soft-capping, QK-clip fix it "
               "(z-loss does not)", 37, variant=True, warm_seconds=21),
    LessonInfo("attention-sinks", "06_attention_sinks.py", "Attention sinks",
               "the first token soaks up attention; softmax1, sink logits, gates, sigmoid; StreamingLLM", 34,
               variant=True, warm_seconds=18),
    LessonInfo("dilution", "07_dilution.py", "Attention dilution in long contexts",
               "needle mass falls with length; SSMax, log-n scaling and top-k keep it; a window loses far needles", 28, variant=True, warm_seconds=12),
    LessonInfo("detr-queries", "08_detr_queries.py", "Why do all my DETR queries look alike?",
               "undifferentiated query maps: no positions, symmetry, short training; the fixes", 42, variant=True, warm_seconds=23),
    LessonInfo("vit-attention", "09_vit_attention.py", "What ViT attention maps can explain",
               "raw attention vs rollout vs gradients, by deletion curves", 35, variant=True, warm_seconds=22),
    LessonInfo("spurious-attention", "10_spurious_attention.py", "Attending to a watermark",
               "a spurious watermark gets the attention; decorrelation fixes it", 20, variant=True, warm_seconds=11),
    LessonInfo("length-generalization", "11_length_generalization.py", "Train short, test long",
               "NoPE/sinusoidal/RoPE degrade beyond the training length, ALiBi does not; position interpolation "
               "(fine-tuned) extends RoPE to 2L", 23, variant=True, warm_seconds=12),
]:
    register(_info)

# Why each lesson without --variant cannot take one (the refusal says it).
for _id, _why in {
    "attention-basics": "its subject is softmax itself: the 1/sqrt(d) scale against saturation (measured on "
                        "jax.nn.softmax directly) and one softmax head trained on associative recall",
    "positions": "it varies the positional encoding (none, learned, sinusoidal, RoPE, ALiBi) with the attention "
                 "held fixed",
    "rank-collapse": "it varies skips, MLPs and norms with the attention held fixed (the rank row of "
                     "`tinytf compare` measures a variant's rank collapse)",
    "vit-attention": "it compares explanation methods (raw attention, rollout, gradients) on the same trained "
                     "2- and 4-layer ViTs with the attention held fixed",
    "spurious-attention": "it varies the training data (a watermark) with the attention held fixed",
}.items():
    if _id in LESSONS and not LESSONS[_id].variant:
        LESSONS[_id] = dataclasses.replace(LESSONS[_id], no_variant_reason=_why)


def available_lessons() -> list[LessonInfo]:
    """The registered lessons whose file exists."""
    try:
        root = lessons_dir()
    except FileNotFoundError:
        return []
    return [info for info in LESSONS.values() if (root / info.file).is_file()]


# ----------------------------------------------------------------------------- CLI
def _cmd_lessons(args) -> int:
    rows = available_lessons()
    if not rows:
        print("no lessons found (run from a tinytf checkout, or set TINYTF_LESSONS_DIR)")
        return 1
    print(f"{'id':<22} {'cold':>5} {'warm':>5}  {'variant':<7}  title: what it shows")
    for info in rows:
        warm = f"{info.warm_seconds:>3.0f} s" if info.warm_seconds else "    -"
        print(f"{info.id:<22} {info.quick_seconds:>3.0f} s {warm}  {'yes' if info.variant else '-':<7}  "
              f"{info.title}: {info.shows}")
    print("\ncold / warm = wall seconds of `tinytf lesson ID --quick` on a shared 2-core CPU, with an empty JAX\n"
          "compilation cache (a first run) and with the cache a first run filled (every later run);\n"
          "measured by `tinytf bench lessons` (2026-12-04, idle box; your machine: run it). A lesson's independent\n"
          "runs go side by side, one per core, so more cores finish sooner ($TINYTF_WORKERS sets how many).")
    print("run one: tinytf lesson ID [--quick] [--seed N] [--out DIR] [--variant V] [--notebook]\n"
          "each run writes a new folder runs/ID/<date>-<time>_seed<N>_<mode>/; runs/ID/latest points to the newest")
    return 0


def _cmd_lesson(args) -> int:
    if args.id not in LESSONS:
        import difflib

        close = difflib.get_close_matches(args.id, list(LESSONS), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"unknown lesson {args.id!r}{hint}; available: {', '.join(i.id for i in available_lessons())}",
              file=sys.stderr)
        return 2
    quick = args.quick or quick_from_env()
    command = getattr(args, "command_line", None)
    try:
        if args.use is not None and args.notebook:
            raise ValueError("--use and --notebook do not combine: --use runs your functions in this process")
        if args.notebook:
            record, run_dir, notebook = run_lesson_notebook(args.id, quick=quick, seed=args.seed, out=args.out,
                                                            variant=args.variant, command=command,
                                                            timeout=args.timeout)
        else:
            run_fn = None
            if args.use is not None:  # the student's exercise functions drive the lesson (tinytf.grading.plug)
                from tinytf.grading.plug import use_in_lesson

                run_fn = use_in_lesson(args.id, load_lesson(args.id), args.use)
            record = run_lesson(args.id, quick=quick, seed=args.seed, out=args.out, variant=args.variant,
                                command=command, run_fn=run_fn)
            run_dir, notebook = Path(args.out) / args.id / record["folder"], None
    except (ValueError, MissingNotebookTools) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a cell failed in the notebook
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(record))
    wrote = f"metrics.json, {len(record['figures'])} figure(s)" + (f" and {notebook.name}" if notebook else "")
    print(f"\nwrote {wrote} to {run_dir}/ ({run_dir.parent / 'latest'} points to it)")
    return 0 if all(c["holds"] for c in record["claims"]) else 3


def register_cli(sub) -> None:
    p = sub.add_parser("lessons", help="list the lessons")
    p.set_defaults(func=_cmd_lessons)
    p = sub.add_parser("lesson", help="run one lesson: a new run folder with metrics.json and figures")
    p.add_argument("id", help="lesson id, see `tinytf lessons`")
    p.add_argument("--quick", action="store_true",
                   help="quick mode (well under a minute on a 2-core CPU; also: TINYTF_QUICK=1)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", type=writable_dir, default=Path("runs"),
                   help="runs root (default runs/): each run writes a new folder OUT/ID/<date>-<time>_seed<N>_<mode>/ "
                        "and OUT/ID/latest points to the newest; nothing is overwritten")
    p.add_argument("--variant", default=None,
                   help="attention variant for lessons about attention: a name (see tinytf.variants) "
                        "or module:function")
    p.add_argument("--notebook", action="store_true",
                   help="run the lesson as a notebook (jupytext + nbclient) and save the executed "
                        "notebook in the run folder (needs: pip install 'tinytf[notebooks]')")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="with --notebook: seconds one cell may run (default: no limit)")
    p.add_argument("--use", metavar="DIR", default=None,
                   help="train with YOUR exercise functions from DIR (01_softmax.py, 02_attention.py; "
                        "attention-basics only); runs your code in this process, unsandboxed")
    p.set_defaults(func=_cmd_lesson)


def run_lesson_notebook(lesson_id: str, *, quick: bool = False, seed: int = 0, out: str | Path = "runs",
                        variant: str | None = None, run_dir: str | Path | None = None, command: str | None = None,
                        timeout: float | None = None, echo: bool | None = None) -> tuple[dict, Path, Path]:
    """Run a lesson as a notebook: jupytext converts the file, nbclient executes it in a fresh kernel.

    The notebook's `parameters` cell gets an injected cell after it (papermill's convention) that
    sets quick, seed, variant and the run folder. The executed notebook is saved in the run folder
    beside metrics.json and the figures, even when a cell fails (then the error says where).

    Args:
      out / run_dir: as in `run_lesson` (a new folder under OUT/ID/ that `latest` then points to,
        or exactly run_dir).
      timeout: seconds one cell may run (None: no limit).
      echo: copy the kernel's progress bars and status lines to this terminal as they come
        (default: unless progress is off); the saved notebook keeps only their final lines.
        When progress is off here (`--quiet`, `tinytf.progress.quiet()`), it is off in the kernel too.

    Returns:
      (metrics.json contents, run folder, path of the executed notebook).
    """
    info = lesson_info(lesson_id)
    if variant is not None and not info.variant:
        raise ValueError(f"lesson {lesson_id!r} does not take --variant (its subject is not the attention variant)")
    fresh = run_dir is None
    run_dir = (new_run_dir(lesson_id, out=out, seed=seed, quick=quick, variant=variant) if fresh
               else _claim_empty(Path(run_dir))).resolve()
    source = lesson_path(lesson_id)
    target = run_dir / (Path(info.file).stem + ".ipynb")
    params = {"quick": bool(quick), "seed": int(seed), "variant": variant, "run_dir": str(run_dir)}
    show = progress_enabled(None)
    env = {"TINYTF_COMMAND": command or _this_command(), "TINYTF_QUIET": "0" if show else "1"}
    run_notebook(source, target, params, cwd=Path.cwd(), timeout=timeout, env=env,
                 echo=show if echo is None else echo)
    record = json.loads((run_dir / "metrics.json").read_text())
    if fresh:
        mark_latest(run_dir)
    return record, run_dir, target


def _lesson_id(lesson: str) -> str:
    """A lesson id, or a lesson file's path or name (the old `main_for(__file__, run)`)."""
    if lesson in LESSONS:
        return lesson
    name = Path(lesson).name
    found = next((i.id for i in LESSONS.values() if i.file == name), None)
    if found is None:
        raise KeyError(f"{lesson!r} is not a registered lesson id or file; available: {', '.join(LESSONS)}")
    return found


def in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, or nbclient/papermill executing one)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def main_for(lesson: str, run_fn, *, quick: bool | None = None, seed: int = 0, variant: str | None = None,
             out: str | Path = "runs", run_dir: str | Path | None = None) -> dict:
    """Run a lesson from its own file: the last cell of every lesson calls it.

    As a script (`python lessons/NN_name.py [--quick] [--seed N] [--out DIR] [--variant V]`) the
    command line overrides the arguments. In a notebook the arguments come from the lesson's
    `parameters` cell; the summary tables and the figures are shown inline (and saved in the run
    folder too). Quick mode: `quick=True`, `--quick`, or $TINYTF_QUICK=1 when quick is None.

    Args:
      lesson: the lesson id (a file path or name also works).
      run_fn: the lesson's `run` function.
      out: the runs root; each run writes a new folder OUT/ID/<date>-<time>_seed<S>_<mode>/.
      run_dir: write exactly here instead (a new or empty folder).

    Returns:
      The contents of the run's metrics.json.
    """
    from tinytf.config import enable_compilation_cache

    lesson_id = _lesson_id(lesson)
    notebook = in_notebook()
    if not notebook:
        import argparse

        parser = argparse.ArgumentParser(description=LESSONS[lesson_id].title)
        parser.add_argument("--quick", action="store_true", help="quick mode (also: TINYTF_QUICK=1)")
        parser.add_argument("--seed", type=nonnegative_int, default=seed)
        parser.add_argument("--out", type=writable_dir, default=out, help="runs root (default runs/)")
        parser.add_argument("--variant", default=variant)
        parser.add_argument("--quiet", action="store_true", help="no progress bars (also: TINYTF_QUIET=1)")
        args = parser.parse_args()
        quick = True if args.quick else quick
        seed, out, variant = args.seed, args.out, args.variant
        if args.quiet:
            from tinytf.progress import set_quiet

            set_quiet()
    quick = quick_from_env() if quick is None else bool(quick)
    enable_compilation_cache()
    command = os.environ.get("TINYTF_COMMAND") or (
        f"notebook {LESSONS[lesson_id].file} (quick={quick}, seed={seed}, variant={variant!r})" if notebook
        else None)
    record = run_lesson(lesson_id, quick=quick, seed=seed, out=out, run_dir=run_dir, variant=variant,
                        run_fn=run_fn, command=command)
    where = Path(run_dir) if run_dir is not None else Path(out) / lesson_id / record["folder"]
    if notebook:
        from IPython.display import Image, Markdown, display

        display(Markdown(summary_markdown(record)))
        for name in record["figures"]:
            display(Markdown(f"*{name}*"), Image(filename=str(where / name)))
        display(Markdown(f"Saved in `{where}`."))
    else:
        print(format_summary(record))
        print(f"\nwrote metrics.json and {len(record['figures'])} figure(s) to {where}/")
        if not all(c["holds"] for c in record["claims"]):
            raise SystemExit(3)
    return record


__all__ = ["LessonInfo", "LESSONS", "run_lesson", "run_lesson_notebook", "load_lesson", "lessons_dir",
           "lesson_path", "lesson_info", "new_run_dir", "mark_latest", "latest_run", "versions", "quick_from_env",
           "format_summary", "summary_markdown", "available_lessons", "in_notebook", "main_for"]
