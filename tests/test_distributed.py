"""Tests for multi-device and multi-process training (tinytf.train.distributed, fit's sharding=).

The oracle is one device: the same model, data and seed trained on 8 devices (replicated or
fully sharded) or by 2 processes on this machine (JAX's distributed runtime with a localhost
coordinator) must give the same loss curve and parameters up to float summation order.
Device counts are fixed when JAX starts, so those runs happen in fresh subprocesses.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tinytf.train import fit
from tinytf.train.distributed import fsdp_spec, initialize_distributed, state_shardings, training_mesh

TESTS = os.path.dirname(os.path.abspath(__file__))

# ------------------------------------------------------------------ in this process


def test_fsdp_splits_the_largest_divisible_axis():
    assert fsdp_spec((7, 24), 8) == PartitionSpec(None, "data")
    assert fsdp_spec((40, 24), 8) == PartitionSpec("data")  # the largest axis
    assert fsdp_spec((16, 16), 8) == PartitionSpec("data")  # the first among equals
    assert fsdp_spec((5, 3), 8) == PartitionSpec()  # nothing divisible: replicated
    assert fsdp_spec((4,), 8) == PartitionSpec()  # smaller than the device count
    assert fsdp_spec((), 8) == PartitionSpec()  # a scalar (Adam's step count)
    assert fsdp_spec((11, 3), 1) == PartitionSpec()


def test_state_shardings_keep_non_params_replicated():
    mesh = training_mesh()
    state = ({"w": jnp.ones((3, 5))}, {"key": jax.random.key(0)}, {"mu": jnp.ones((3, 5)), "count": jnp.zeros(())})
    for mode in ("replicated", "fsdp"):
        shardings = state_shardings(state, mesh, mode)
        assert all(s.mesh == mesh for s in jax.tree.leaves(shardings))
    with pytest.raises(ValueError, match=r"sharding must be one of \('replicated', 'fsdp'\), got 'zero3'"):
        state_shardings(state, mesh, "zero3")


def test_initialize_distributed_checks_its_arguments(monkeypatch):
    info = initialize_distributed()  # a plain machine: stays one process
    assert info["process_count"] == 1 and info["process_index"] == 0 and info["devices"] >= 1
    with pytest.raises(ValueError, match="process_id must be < num_processes=2, got 3"):
        initialize_distributed("localhost:1", 2, 3)
    with pytest.raises(ValueError, match="no coordinator_address"):
        initialize_distributed(num_processes=2, process_id=0)
    monkeypatch.setenv("TINYTF_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"num_processes \(\$TINYTF_NUM_PROCESSES\) must be a non-negative int, "
                                         r"got 'two'"):
        initialize_distributed("localhost:1")


def test_fit_rejects_an_unknown_sharding():
    model = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"sharding must be one of \('replicated', 'fsdp'\), got 'ddp'"):
        fit(model, lambda k: jax.random.normal(k, (7, 3)), steps=1, loss_fn=lambda m, x: jnp.mean(m(x) ** 2),
            sharding="ddp", progress=False)


# ------------------------------------------------------- 8 devices in one process

EIGHT_DEVICES = textwrap.dedent("""
    import json, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from tinytf.config import enable_compilation_cache
    from tinytf.data import copy_task
    from tinytf.models import CausalLM, LMConfig
    from tinytf.train import cross_entropy, fit, make_optimizer
    from tinytf.train.distributed import host_values

    enable_compilation_cache()
    assert jax.device_count() == 8, jax.devices()
    config = LMConfig.micro(num_layers=1)
    data = lambda key: copy_task(key, batch_size=16, length=8, vocab_size=32)
    loss_fn = lambda m, b: cross_entropy(m(b["tokens"]), b["targets"], b["loss_mask"])
    # One compiled call on the trained (sharded) state. Not eager: op by op, a forward over 8
    # pretend CPU devices dispatches dozens of small 8-device programs at once, and XLA:CPU's
    # thread pool (as many threads as devices here) can deadlock on them when the machine is busy.
    evals = nnx.jit(lambda m: {"first_logit": m(jnp.zeros((1, 4), jnp.int32))[0, 0, 0]})

    def named(tree):
        return {jax.tree_util.keystr(p): v.tolist() for p, v in jax.tree_util.tree_leaves_with_path(tree)}

    def train(steps=6, **kw):
        model = CausalLM(config, rngs=nnx.Rngs(0))
        h = fit(model, kw.pop("data", data), steps=steps, loss_fn=loss_fn, log_every=1, progress=False,
                eval_fn=evals, **kw)
        params = nnx.state(model, nnx.Param)
        return model, h, params

    out = {}
    for name, kw in {"single": dict(data_parallel=False), "replicated": {}, "fsdp": dict(sharding="fsdp")}.items():
        model, h, params = train(**kw)
        leaves = jax.tree.leaves(params)
        out[name] = {"loss": list(map(float, h["loss"])), "eval": float(h["eval/first_logit"][-1]),
                     "params": named(host_values(params)),
                     "devices": max(len(x.sharding.device_set) for x in leaves),
                     "bytes": sum(x.nbytes for x in leaves),
                     "bytes_per_device": sum(max(s.data.nbytes for s in x.addressable_shards) for x in leaves)}
    # host batches (an iterable), fully sharded state
    make = jax.jit(data)
    host = [jax.tree.map(np.asarray, make(jax.random.fold_in(jax.random.key(0), s))) for s in range(6)]
    out["fsdp_host"] = {"loss": list(map(float, train(data=iter(host), sharding="fsdp")[1]["loss"]))}
    # checkpoint + resume of a sharded state: 3 steps, then on to 6, as one run of 6 (the optimizer's
    # schedule is that of 6 steps in both calls)
    with tempfile.TemporaryDirectory() as d:
        tx = make_optimizer(3e-3, 6)
        train(steps=3, sharding="fsdp", checkpoint_dir=d + "/ck", optimizer=tx)
        model, h, params = train(steps=6, sharding="fsdp", checkpoint_dir=d + "/ck", resume=True, optimizer=tx)
        out["fsdp_resumed"] = {"loss": list(map(float, h["loss"])),
                               "params": named(host_values(params))}
    print("RESULT" + json.dumps(out))
""")


def _run(code_or_args, env_extra, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TINYTF_QUIET="1", **env_extra)
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out, err


def _close(a, b, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_eight_devices_replicated_and_fsdp_match_one_device():
    out, _ = _result(_run(EIGHT_DEVICES, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}))
    got = json.loads(out.split("RESULT", 1)[1])
    single = got["single"]
    assert single["devices"] == 1 and got["replicated"]["devices"] == 8 and got["fsdp"]["devices"] == 8
    assert len(single["loss"]) == 6 and single["loss"][-1] < single["loss"][0]
    for name in ("replicated", "fsdp", "fsdp_host", "fsdp_resumed"):
        assert len(got[name]["loss"]) == 6, name
        _close(got[name]["loss"], single["loss"])
    # The key projection's bias has no true gradient (softmax ignores a constant added to every
    # logit of a row): Adam normalises its rounding noise into steps of up to the learning rate.
    for name in ("replicated", "fsdp", "fsdp_resumed"):
        assert got[name]["params"].keys() == single["params"].keys()
        for path, value in single["params"].items():
            noise = "key_proj']['bias" in path
            _close(got[name]["params"][path], value, rtol=1e-4, atol=3e-3 if noise else 1e-5)
    _close(got["fsdp"]["eval"], single["eval"], rtol=1e-4, atol=1e-5)
    # replicated: every device holds everything; fsdp: about an eighth (odd-sized leaves stay whole)
    assert got["replicated"]["bytes_per_device"] == single["bytes"]
    assert got["fsdp"]["bytes_per_device"] < 0.2 * single["bytes"]


# ---------------------------------------------------- 2 processes on this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_fsdp_match_one_device(tmp_path):
    """`tinytf lm train` as two processes (2 CPU devices each): the README's multi-machine command."""
    common = ["--preset", "micro", "--layers", "1", "--steps", "5", "--batch-size", "16", "--length", "8",
              "--log-every", "1"]
    cli = [sys.executable, "-m", "tinytf", "--quiet", "lm", "train", *common]
    one = _run(cli + ["--json", str(tmp_path / "one.json")], {})
    port = _free_port()
    procs = [_run(cli + ["--sharding", "fsdp", "--data", "host", "--coordinator", f"localhost:{port}",
                         "--num-processes", "2", "--process-id", str(i), "--cpu-devices", "2",
                         "--json", str(tmp_path / f"p{i}.json")], {}) for i in range(2)]
    try:
        outs = [_result(p)[0] for p in [one, *procs]]
    finally:
        for p in [one, *procs]:
            p.kill()
    single = json.loads((tmp_path / "one.json").read_text())
    assert not (tmp_path / "p1.json").exists()  # process 0 reports
    multi = json.loads((tmp_path / "p0.json").read_text())
    assert multi["process_count"] == 2 and multi["devices"] == 4 and single["devices"] == 1
    _close(multi["loss"], single["loss"])
    _close(multi["param_abs_sum"], single["param_abs_sum"], rtol=1e-5)
    assert multi["param_bytes_per_device"] < 0.35 * single["param_bytes"]
    assert "2 process(es), 4 cpu device(s), sharding=fsdp" in outs[1] and "loss" not in outs[2]
