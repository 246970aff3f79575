"""`tinytf lm train`: train a causal LM on one device, many devices, or many machines.

The same command runs everywhere; only the launch differs (README, "Scaling out"):

  one device              tinytf lm train
  many local devices      the batch is split over them (a GPU box; on a CPU,
                          XLA_FLAGS=--xla_force_host_platform_device_count=8 pretends)
  many machines           every machine runs the command with the coordinator's
                          host:port, the process count and its own process id

`--sharding fsdp` splits the parameters and Adam moments over all devices (see
tinytf/train/distributed.py). Process 0 prints the loss curve and, with --json, writes
it: the run on 8 devices or 2 machines gives the curve of one device (tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import json
import time

from tinytf.apps.args import add_train_command, nonnegative_int, positive_int, writable_file


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("micro", "tiny"), default="tiny", help="LMConfig preset (default tiny)")
    p.add_argument("--d-model", type=positive_int, default=None, help="override the preset's width")
    p.add_argument("--layers", type=positive_int, default=None, help="override the preset's depth")
    p.add_argument("--steps", type=positive_int, default=200)
    p.add_argument("--batch-size", type=positive_int, default=32, help="the global batch, over all processes")
    p.add_argument("--length", type=positive_int, default=16, help="tokens per half of the copy task")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--sharding", choices=("replicated", "fsdp"), default="replicated",
                   help="parameters and optimizer state on every device, or split over them")
    p.add_argument("--data", choices=("device", "host"), default="device",
                   help="device: batches made inside the compiled step; host: each process feeds its "
                        "shard of every global batch from numpy")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address; with --num-processes and --process-id (or $TINYTF_COORDINATOR, "
                        "$TINYTF_NUM_PROCESSES, $TINYTF_PROCESS_ID)")
    p.add_argument("--num-processes", type=positive_int, default=None)
    p.add_argument("--process-id", type=nonnegative_int, default=None)
    p.add_argument("--cpu-devices", type=positive_int, default=None,
                   help="CPU devices this process exposes (testing multi-device code on a CPU)")
    p.add_argument("--log-every", type=positive_int, default=None, help="print the loss every k steps")
    p.add_argument("--json", type=writable_file, default=None, help="write the loss curve and setup here")


def register_cli(sub) -> None:
    """`tinytf lm train ...`."""
    add_train_command(sub, "lm", "train a causal LM on one device, many devices or many machines",
                      "train LMConfig on the copy task; --sharding, --coordinator for scale-out", _add_arguments, run)


def run(args) -> dict:
    """Join the run (if distributed), train, print the curve on process 0; return the report."""
    # before anything touches a JAX backend: the device count is fixed when it starts
    from tinytf.train.distributed import host_values, initialize_distributed

    setup = initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                   local_cpu_devices=args.cpu_devices)
    import jax
    import numpy as np
    from flax import nnx

    from tinytf.data import copy_task
    from tinytf.models import CausalLM, LMConfig
    from tinytf.train import cross_entropy, fit

    overrides = {k: v for k, v in (("d_model", args.d_model), ("num_layers", args.layers)) if v is not None}
    config = getattr(LMConfig, args.preset)(**overrides)
    B, P, rank = args.batch_size, setup["process_count"], setup["process_index"]
    if B % setup["devices"]:
        raise SystemExit(f"--batch-size {B} is not divisible by the {setup['devices']} devices of this run")

    def make(key):
        return copy_task(key, batch_size=B, length=args.length, vocab_size=config.vocab_size)

    def loss_fn(model, batch):
        return cross_entropy(model(batch["tokens"]), batch["targets"], batch["loss_mask"])

    data = make
    if args.data == "host":  # each process feeds its rows of the global batch (the same batches as "device")
        make_jit = jax.jit(make)
        rows = slice(rank * B // P, (rank + 1) * B // P)

        def host_batches():
            for step in range(args.steps):
                batch = make_jit(jax.random.fold_in(jax.random.key(args.seed), step))
                yield {k: np.asarray(v)[rows] for k, v in batch.items()}

        data = host_batches()
    model = CausalLM(config, rngs=nnx.Rngs(args.seed))
    t0 = time.perf_counter()
    history = fit(model, data, steps=args.steps, loss_fn=loss_fn, learning_rate=args.learning_rate,
                  seed=args.seed, sharding=args.sharding, log_every=1)
    wall = time.perf_counter() - t0
    steps, losses = history.steps("loss"), history["loss"]
    params = nnx.state(model, nnx.Param)
    per_device = sum(max(s.data.nbytes for s in x.addressable_shards) for x in jax.tree.leaves(params))
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    checksum = float(sum(np.abs(v.astype(np.float64)).sum() for v in jax.tree.leaves(host_values(params))))
    report = {**setup, "sharding": args.sharding, "data": args.data, "config": repr(config), "batch_size": B,
              "steps": list(map(int, steps)), "loss": list(map(float, losses)), "param_bytes": int(total),
              "param_bytes_per_device": int(per_device), "param_abs_sum": checksum,
              "steps_per_s": history.steps_per_s, "wall_s": wall, "compile_s": history.compile_time_s}
    if rank == 0:
        every = args.log_every or max(1, args.steps // 10)
        print(f"{P} process(es), {setup['devices']} {setup['platform']} device(s), sharding={args.sharding}, "
              f"global batch {B}: parameters {total / 1e6:.2f} MB, {per_device / 1e6:.2f} MB per device")
        for s, v in zip(steps, losses):
            if s % every == 0 or s == steps[-1]:
                print(f"step {s:5d}  loss {v:.5f}")
        print(f"{history.steps_per_s:.1f} steps/s (compile {history.compile_time_s:.1f} s, wall {wall:.1f} s)")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
    return report


__all__ = ["register_cli", "run"]
