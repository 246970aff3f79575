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
    runs = parallel_grid(lambda lr, seed: train(lr, seed), [1e-3, 1e-2], [0, 1, 2])  # {lr: [per seed]}

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
C = TypeVar("C")
S = TypeVar("S")


def default_workers() -> int:
    """``$TINYTF_WORKERS`` if set, else the number of CPU cores this process may run on."""
    text = os.environ.get("TINYTF_WORKERS", "").strip()
    if text:
        if not text.isdecimal() or int(text) < 1:
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
      As soon as one job fails, the jobs not started yet are cancelled and the running ones
      are waited for; then the first failure in the order of ``items`` is raised. Ctrl-C
      does the same.
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
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        if _failures(futures):
            _stop(futures)  # a job failed: start no more, let the running ones end
    except BaseException:  # Ctrl-C
        _stop(futures)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    failures = _failures(futures)
    if failures:
        raise failures[0]  # the first failure in the order of items
    return [future.result() for future in futures]


def _failures(futures) -> list[BaseException]:
    """The exceptions of the finished jobs that failed, in the order of the futures."""
    return [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception() is not None]


def _stop(futures) -> None:
    """Cancel the jobs not started yet and wait for the running ones."""
    for future in futures:
        future.cancel()
    running = [f for f in futures if not f.done()]
    if running:
        say(f"parallel_map: stopping; waiting for the {len(running)} running job(s) to finish")
        concurrent.futures.wait(running)


def parallel_grid(fn: Callable[[C, S], R], conditions: Iterable[C], seeds: Iterable[S], *,
                  workers: int | None = None) -> dict[C, list[R]]:
    """``{condition: [fn(condition, seed) for seed in seeds]}``, every call a `parallel_map` job.

    The usual shape of an experiment: each condition (a model variant, a learning rate)
    trained at each seed, then summarised per condition. Jobs start condition by condition,
    so put conditions that share a compiled program apart if they should not compile it twice.

        runs = parallel_grid(lambda name, seed: train(configs[name], seed), configs, [0, 1, 2])
        accuracy = {name: np.mean([r["accuracy"] for r in runs[name]]) for name in runs}

    Args:
      fn: ``fn(condition, seed)``, one independent job.
      conditions: hashable conditions (a dict gives its keys), the keys of the result in order.
      seeds: the seeds every condition runs at.
      workers: as in `parallel_map`.
    """
    conditions, seeds = list(conditions), list(seeds)
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"conditions must be distinct, got {conditions}")
    done = parallel_map(lambda job: fn(*job), [(c, s) for c in conditions for s in seeds], workers=workers)
    return {c: done[i * len(seeds):(i + 1) * len(seeds)] for i, c in enumerate(conditions)}


__all__ = ["parallel_map", "parallel_grid", "default_workers"]
