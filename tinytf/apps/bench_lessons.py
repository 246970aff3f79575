"""`tinytf bench lessons`: time to first result of every lesson's quick mode, cold and warm.

Each lesson runs twice as ``tinytf lesson ID --quick`` in a fresh process, both times with
the same new, empty JAX compilation-cache folder: the first run compiles everything (what a
student meets on a fresh machine), the second reads the compiled programs from the cache
(what they meet from then on). The wall time of each process is measured from outside, so
it includes starting Python and importing JAX. The 1-minute load average before each
lesson is printed beside it: the numbers only mean something on an otherwise idle machine.

The registry's ``quick_seconds`` / ``warm_seconds`` (shown by ``tinytf lessons``) are copied
from a run of this command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinytf.apps.lessons import LESSONS, available_lessons
from tinytf.progress import progress_bar


def _run_once(lesson_id: str, cache: Path, out: Path) -> tuple[float, int]:
    env = dict(os.environ, TINYTF_CACHE_DIR=str(cache), TINYTF_QUIET="1")
    env.pop("TINYTF_NO_COMPILATION_CACHE", None)
    command = [sys.executable, "-m", "tinytf.apps.cli", "lesson", lesson_id, "--quick", "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.returncode


def bench_lessons(ids: list[str] | None = None, print_fn=print) -> dict:
    """Cold and warm quick-mode wall seconds per lesson (see the module docstring)."""
    infos = [LESSONS[i] for i in ids] if ids else available_lessons()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinytf-bench-lessons-") as tmp:
        bar = progress_bar(total=2 * len(infos), desc="bench lessons", unit="run")
        for info in infos:
            load = os.getloadavg()[0]
            cache = Path(tmp) / info.id / "cache"  # new and empty: the first run is cold
            cold, rc_cold = _run_once(info.id, cache, Path(tmp) / info.id / "runs")
            bar.update(1)
            warm, rc_warm = _run_once(info.id, cache, Path(tmp) / info.id / "runs")
            bar.update(1)
            rows.append({"id": info.id, "cold_s": round(cold, 1), "warm_s": round(warm, 1),
                         "load_before": round(load, 2), "exit_codes": [rc_cold, rc_warm]})
        bar.close()
    if print_fn:
        print_fn(f"{'lesson':<20} {'cold':>7} {'warm':>7}  load  exit")
        for r in rows:
            print_fn(f"{r['id']:<20} {r['cold_s']:>6.1f}s {r['warm_s']:>6.1f}s  {r['load_before']:>4.1f}  "
                     f"{r['exit_codes']}")
        print_fn("cold: empty compilation cache; warm: the same cache, second run; wall seconds of the whole "
                 "process (Python start and imports included). Exit 3 = a claim failed, other non-zero = an error.")
    return {"rows": rows, "cpus": os.cpu_count(), "python": sys.version.split()[0]}


def cmd_bench_lessons(args) -> int:
    for i in args.ids:
        if i not in LESSONS:
            raise SystemExit(f"tinytf bench lessons: unknown lesson {i!r}; known: {', '.join(LESSONS)}")
    result = bench_lessons(args.ids or None, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result))
    return 0 if all(r["exit_codes"] == [0, 0] for r in result["rows"]) else 1
