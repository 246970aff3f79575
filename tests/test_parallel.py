"""parallel_map: independent runs side by side give the numbers they give one by one."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf.progress import labelled, progress_bar, say
from tinytf.train import cross_entropy, fit, parallel_grid, parallel_map
from tinytf.train.parallel import default_workers


class Tiny(nnx.Module):
    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.embed = nnx.Embed(8, 16, rngs=rngs)
        self.out = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, tokens):
        return self.out(jnp.tanh(self.embed(tokens)))


def data(key):
    tokens = jax.random.randint(key, (8, 6), 0, 8)
    return tokens, (tokens + 1) % 8


def loss_fn(model, batch):
    tokens, targets = batch
    return cross_entropy(model(tokens), targets)


def train(job):
    seed, lr = job
    model = Tiny(seed)
    history = fit(model, data, steps=30, loss_fn=loss_fn, learning_rate=lr, seed=seed, progress=False)
    return jax.tree.map(np.asarray, nnx.state(model, nnx.Param)), np.asarray(history["loss"])


def test_runs_side_by_side_are_bit_identical_to_one_by_one():
    jobs = [(0, 1e-2), (1, 3e-2), (0, 3e-2)]
    one_by_one = [train(job) for job in jobs]
    side_by_side = parallel_map(train, jobs, workers=3)
    for (params_a, loss_a), (params_b, loss_b) in zip(one_by_one, side_by_side):
        np.testing.assert_array_equal(loss_a, loss_b)
        jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    assert not np.array_equal(one_by_one[0][1], one_by_one[2][1])  # the jobs really differ


def test_results_keep_the_order_of_the_items_and_run_at_once():
    threads = set()

    def job(i):
        threads.add(threading.get_ident())
        time.sleep(0.05 * (3 - i))  # the first item finishes last
        return i * i

    assert parallel_map(job, range(4), workers=4) == [0, 1, 4, 9]
    assert len(threads) > 1 and threading.get_ident() not in threads
    threads.clear()
    assert parallel_map(job, range(3), workers=1) == [0, 1, 4]
    assert threads == {threading.get_ident()}  # one by one, in the calling thread
    assert parallel_map(job, [], workers=2) == []


def test_the_first_failing_job_raises_and_the_rest_are_cancelled():
    started = []

    def job(i):
        started.append(i)
        if i in (1, 2):
            time.sleep(0.1 if i == 1 else 0.0)  # job 2 fails first in time; job 1 comes first in order
            raise ValueError(f"job {i} failed")
        time.sleep(0.2)
        return i

    begin = time.perf_counter()
    with pytest.raises(ValueError, match="job 1 failed"):
        parallel_map(job, range(20), workers=3)
    # job 2's failure stops the queue at once: only the thread it freed may have taken one more
    # job before the queue was cancelled (waiting for job 1 first would have started jobs 3-5)
    assert sorted(started)[:3] == [0, 1, 2] and len(started) <= 4, started
    # the running jobs end (0.2 s) and the queue does not: running all 20 would take >= 1.2 s. The
    # bound leaves slack for a loaded CI machine (the job count above is the exact check)
    assert time.perf_counter() - begin < 1.0


def test_a_grid_of_conditions_and_seeds_comes_back_per_condition():
    calls = []

    def job(condition, seed):
        calls.append((condition, seed))
        return f"{condition}/{seed}"

    runs = parallel_grid(job, {"b": 1, "a": 2}, [0, 7], workers=2)
    assert runs == {"b": ["b/0", "b/7"], "a": ["a/0", "a/7"]} and list(runs) == ["b", "a"]
    assert sorted(calls) == [("a", 0), ("a", 7), ("b", 0), ("b", 7)]
    assert parallel_grid(job, ["x"], [], workers=1) == {"x": []}
    with pytest.raises(ValueError, match="conditions must be distinct"):
        parallel_grid(job, ["x", "x"], [0])


@pytest.mark.parametrize("workers", [0, -2, 1.5, "2", True])
def test_bad_workers_name_the_argument(workers):
    with pytest.raises(ValueError, match=f"workers must be a positive int, got {workers!r}"):
        parallel_map(abs, [1, 2], workers=workers)


def test_workers_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("TINYTF_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("TINYTF_WORKERS")
    assert default_workers() >= 1
    for text in ("0", "two", "-1", "\u00b2"):  # "²" is a digit to str.isdigit, not to int()
        monkeypatch.setenv("TINYTF_WORKERS", text)
        with pytest.raises(ValueError, match=rf"\$TINYTF_WORKERS must be a whole number >= 1 .*got '{text}'"):
            parallel_map(abs, [1, 2])


def test_labelled_status_lines_follow_their_own_threads_bar(capsys):
    barrier = threading.Barrier(2)

    def job(name):
        bar = progress_bar(1, desc=name, enabled=True)
        barrier.wait()  # both bars exist before either thread speaks
        say(f"{name}: done", enabled=True)
        bar.close()
        return bar.desc

    with labelled("lesson"):
        descs = parallel_map(job, ["fit", "eval"], workers=2)
    err = capsys.readouterr().err
    for desc in descs:  # "[lesson] fit N" -> "[lesson] fit N: done", whichever N it got
        assert f"{desc}: done\n" in err
