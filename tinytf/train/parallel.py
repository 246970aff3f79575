"""Independent training runs side by side: one per CPU core, results as if run one by one.

A lesson trains many small models (conditions x learning rates x seeds) that do not talk
to each other. One tiny model cannot keep a CPU busy: its matmuls are too small to use
every core well, and between steps the host traces, compiles and runs callbacks. Running
two or more such runs at once in threads overlaps all of that (JAX releases the GIL
while XLA compiles and computes), the way `make -j` overlaps independent builds.

The numbers do not change: each run is its own compiled program on its own arrays, and
XLA's CPU kernels split work the same way however busy the machine is, so every run is
bit-identical to running it alone (`tests/test_parallel.py` checks it on `fit`).

    histories = parallel_map(lambda seed: fit(make_model(seed), ...), [0, 1, 2])

How many at once: ``workers``, else ``$TINYTF_WORKERS``, else the number of CPU cores
this process may use; ``workers=1`` runs the jobs one by one in the calling thread (use
it to debug a job, or when each job already fills the machine, e.g. on a GPU).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

from tinytf.checks import check_positive
from tinytf.progress import say

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """``$TINYTF_WORKERS`` if set, else the number of CPU cores this process may run on."""
    text = os.environ.get("TINYTF_WORKERS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"$TINYTF_WORKERS must be a whole number >= 1 (jobs at a time), got {text!r}")
        return int(text)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None) -> list[R]:
    """``[fn(item) for item in items]``, running up to ``workers`` calls at a time in threads.

    Args:
      fn: one independent job, e.g. build a model and ``fit`` it. Jobs must not share
        mutable state (a model, an optimizer, a dict they write to); each builds its own.
      items: what to call ``fn`` on.
      workers: most jobs at a time (>= 1); default ``default_workers()``. With 1, or a
        single item, the jobs run one by one in the calling thread.

    Returns:
      The results, in the order of ``items``.

    Raises:
      The first job's exception, in the order of ``items``: the jobs not started yet are
      cancelled and the running ones are waited for. Ctrl-C does the same.
    """
    items = list(items)
    if workers is None:
        workers = default_workers()
    check_positive("workers", workers)
    workers = min(int(workers), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tinytf-job")
    futures = [pool.submit(fn, item) for item in items]
    try:
        return [future.result() for future in futures]
    except BaseException:
        running = sum(f.running() for f in futures)
        if running:
            say(f"parallel_map: stopping; waiting for the {running} running job(s) to finish")
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["parallel_map", "default_workers"]
