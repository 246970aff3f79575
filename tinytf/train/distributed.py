"""Training on many devices and many machines: JAX's distributed runtime and one global mesh.

JAX runs one Python process per machine (or per accelerator), all executing the same
program ("multi-controller"). `initialize_distributed` connects them through a
coordinator (`jax.distributed.initialize`); afterwards `jax.devices()` lists every
device of every process, and one `Mesh` over all of them with a single axis "data"
describes how `fit` lays out its work:

- the batch is split along "data" (data parallelism): each device computes the loss and
  gradients of its rows, and the compiler inserts the all-reduce that averages the
  gradients (the gradient of a mean over the global batch);
- the trained state is either *replicated* (every device holds all parameters and
  optimizer moments) or *fully sharded* ("fsdp"): each array is split along one of its
  axes over the devices, so a model whose parameters plus Adam moments do not fit on one
  device still trains. The compiler gathers each weight where the forward and backward
  passes need it and reduce-scatters its gradient (ZeRO-3, Rajbhandari et al. 2020;
  PyTorch FSDP, Zhao et al. 2023; here expressed as shardings, Xu et al. 2021, GSPMD).

Either way the arithmetic is that of one device on the global batch: the loss curve is
the same up to floating-point summation order.

Reading order: `initialize_distributed`, `training_mesh`, `state_shardings`,
`place` (host values -> global arrays), `global_batch` (each process's shard of a batch
-> one global array), `agree_min` (a number all processes agree on).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tinytf.checks import check_int

SHARDINGS = ("replicated", "fsdp")
"""How `fit` lays out the trained state over the mesh."""

_ENV = {"coordinator_address": "TINYTF_COORDINATOR", "num_processes": "TINYTF_NUM_PROCESSES",
        "process_id": "TINYTF_PROCESS_ID"}


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, local_cpu_devices: int | None = None) -> dict:
    """Join this process to a multi-process JAX run; call it first, before any JAX computation.

    Every process calls it with the same coordinator (host:port of process 0, reachable from
    all machines) and process count, and its own id in 0..num_processes-1. Arguments left
    None are read from $TINYTF_COORDINATOR, $TINYTF_NUM_PROCESSES, $TINYTF_PROCESS_ID; when
    none is given anywhere, JAX detects a cluster itself (SLURM, Open MPI, Cloud TPU), and a
    plain single machine stays a single process. Calling it again is a no-op.

    Args:
      coordinator_address: "host:port" of process 0's coordinator service.
      num_processes: how many processes take part.
      process_id: this process's index.
      local_cpu_devices: on a CPU-only machine, how many CPU devices this process exposes
        (like XLA_FLAGS=--xla_force_host_platform_device_count=N; for testing).

    Returns:
      {"process_index", "process_count", "local_devices", "devices", "platform"}.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    for name, env in _ENV.items():
        if given[name] is None and os.environ.get(env):
            given[name] = os.environ[env]
    for name in ("num_processes", "process_id"):
        if isinstance(given[name], str):
            if not given[name].strip().isdigit():
                raise ValueError(f"{name} (${_ENV[name]}) must be a non-negative int, got {given[name]!r}")
            given[name] = int(given[name])
    if given["num_processes"] is not None:
        check_int("num_processes", given["num_processes"], low=1)
    if given["process_id"] is not None:
        check_int("process_id", given["process_id"], low=0)
        if given["num_processes"] is not None and given["process_id"] >= given["num_processes"]:
            raise ValueError(f"process_id must be < num_processes={given['num_processes']}, got "
                             f"{given['process_id']}")
    if local_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", check_int("local_cpu_devices", local_cpu_devices, low=1))
    if not jax.distributed.is_initialized():
        explicit = any(v is not None for v in given.values())
        if explicit and given["coordinator_address"] is None:
            raise ValueError(f"num_processes/process_id were given ({given}) but no coordinator_address "
                             f"(host:port of process 0; also ${_ENV['coordinator_address']})")
        if explicit or _cluster_detected():
            jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count(),
            "platform": jax.devices()[0].platform}


def _cluster_detected() -> bool:
    """True inside a cluster job that jax.distributed.initialize() configures by itself."""
    return any(os.environ.get(v) for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"))


def training_mesh() -> Mesh:
    """A one-axis mesh ("data",) over every device of every process, in a fixed global order."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def fsdp_spec(shape: tuple[int, ...], devices: int) -> PartitionSpec:
    """How FSDP splits one array: its largest axis divisible by the device count (else replicated).

    Splitting the largest axis keeps the shards as even and as few-sided as possible; an
    array with no divisible axis (a scalar step count, an odd-sized bias) stays replicated.
    """
    axes = [a for a in range(len(shape)) if shape[a] >= devices and shape[a] % devices == 0]
    if not axes or devices == 1:
        return PartitionSpec()
    axis = max(axes, key=lambda a: (shape[a], -a))  # the largest; the first among equals
    return PartitionSpec(*([None] * axis + ["data"]))


def state_shardings(state, mesh: Mesh, sharding: str):
    """The NamedSharding of every leaf of fit's state (params, other variables, optimizer state).

    "replicated": every leaf on every device. "fsdp": parameters and optimizer state split
    by `fsdp_spec`; the other variables (RNG keys, batch statistics, gates) stay replicated.
    """
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    replicated = NamedSharding(mesh, PartitionSpec())
    if sharding == "replicated":
        return jax.tree.map(lambda _: replicated, state)
    params, rest, opt_state = state

    def split(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return replicated
        return NamedSharding(mesh, fsdp_spec(x.shape, mesh.size))

    return (jax.tree.map(split, params), jax.tree.map(lambda _: replicated, rest),
            jax.tree.map(split, opt_state))


def place(tree, shardings):
    """Put host-side (or single-device) values onto global shardings; every process passes the same values.

    In one process this is `jax.device_put`. With several, each process builds its own
    shards of the global array from its copy of the value (no communication).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, tree, shardings)


def check_same_everywhere(tree, what: str) -> None:
    """Raise unless every process holds the same values (e.g. parameters initialised with one seed)."""
    if jax.process_count() == 1:
        return
    leaves = [np.asarray(x if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else jax.random.key_data(x))
              for x in jax.tree.leaves(tree)]
    fingerprint = np.asarray([float(np.sum(np.abs(v.astype(np.float64)))) for v in leaves] or [0.0])
    gathered = multihost_utils.process_allgather(fingerprint)  # (processes, leaves)
    if not np.all(gathered == gathered[0]):
        differ = [p for p in range(len(gathered)) if not np.array_equal(gathered[p], gathered[0])]
        raise ValueError(f"{what} differ between processes (processes {differ} differ from process 0): "
                         "every process must build the model from the same seed before fit")


def global_batch(local, sharding: NamedSharding, axis: int):
    """Each process's shard of a batch (split along `axis`) -> global arrays split over the mesh.

    Arrays with fewer than axis + 1 dimensions (a scalar flag) must be equal on every process
    and are replicated. In one process the local batch is the global one.
    """
    split = NamedSharding(sharding.mesh, PartitionSpec(*([None] * axis + ["data"])))
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(local, jax.tree.map(lambda x: split if np.ndim(x) > axis else replicated, local))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(split, x) if np.ndim(x) > axis
                        else place(x, replicated), local)


def agree_min(value: int) -> int:
    """The smallest of each process's `value`: every process runs the same number of steps."""
    if jax.process_count() == 1:
        return int(value)
    return int(np.min(multihost_utils.process_allgather(np.asarray(value, np.int64))))


def host_values(tree):
    """Numpy copies of (possibly sharded, multi-process) arrays: gathered where needed."""
    def one(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)


__all__ = ["SHARDINGS", "initialize_distributed", "training_mesh", "fsdp_spec", "state_shardings", "place",
           "check_same_everywhere", "global_batch", "agree_min", "host_values"]
