"""Shared test setup: CPU, fast compilation, the compilation cache, and strict rank promotion.

Unit tests compile hundreds of small programs and run each for milliseconds, so on a clean
machine most of their time is XLA compiling. `--xla_backend_optimization_level=0` skips LLVM's
optimisation passes: on the 2-core box, tests/test_models.py + tests/test_detr.py from an empty
cache took 154 s instead of 230 s. It changes how fast the code runs, and the last bits of what it
computes (unit tests compare with tolerances; a model trained at another level drifts further). Lessons
train for thousands of steps, where optimised code pays (entropy-collapse quick: 43 s warm by
default, 107 s at level 0), so lesson runs get the user's own flags back: `USER_XLA_FLAGS`.

A lesson trains its independent runs side by side, one per core (`tinytf.train.parallel_map`).
Under pytest-xdist the test processes already fill the cores, so each one (and the lesson kernels
it starts) gets its share: `$TINYTF_WORKERS` = cores // test processes, at least 1, unless set. The
numbers do not depend on it. With the cores already full, more threads cannot help: clean CI runs
on the 2-core box took 24.4 min with 2 jobs per lesson and 23.0 min with 1, a difference inside the
box's day-to-day noise.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} --xla_backend_optimization_level=0".strip()
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # one of several test processes
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("TINYTF_WORKERS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import jax  # noqa: E402
import pytest  # noqa: E402

from tinytf.config import enable_compilation_cache  # noqa: E402

enable_compilation_cache()


@pytest.fixture
def strict_rank():
    """Make silent broadcasting between arrays of different rank an error."""
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def user_xla_flags(monkeypatch):
    """Give processes started from this test (a lesson's kernel) the user's XLA flags back."""
    monkeypatch.setenv("XLA_FLAGS", USER_XLA_FLAGS)


def pytest_collection_modifyitems(config, items):
    """Run the longest tests (each lesson as a notebook, longest first) before the rest. With the
    README's `-n 2 --maxschedchunk 1` each process takes the next test when it is free, so the two
    share the lessons and the run ends on short tests. (With `--dist worksteal` the first process
    would get all of them: xdist hands out contiguous chunks first.)"""
    from tinytf.apps.lessons import LESSONS

    def lesson_seconds(item):
        if item.nodeid.startswith("tests/test_lessons.py::test_lesson_runs_as_a_notebook"):
            return LESSONS[item.callspec.params["lesson_id"]].quick_seconds
        return 0.0
    items.sort(key=lambda item: -lesson_seconds(item))  # stable: everything else keeps its order
