"""`compiled`: a data generator that runs as one compiled program, also when called eagerly.

A generator called outside `jax.jit` would otherwise run op by op, and on a CPU each new
op shape is compiled on its own: dozens of tiny compilations, 1-5 s, for one held-out batch
(a profiled warm run of the attention-sinks lesson spent 7 s in its 12 generator calls). As one `jax.jit` program with the
configuration static, the same call costs one compilation, which the persistent
compilation cache keeps for the next run. Inside a trace (a training loop) the jitted
generator is inlined, so nothing changes there.
"""

from __future__ import annotations

import functools
import inspect

import jax

from tinytf.checks import check_key


def compiled(generator):
    """Wrap `generator(key, ..., **config)` so every argument but the key is static under `jax.jit`.

    Configuration that cannot be hashed (a list where a tuple was meant, an array) runs the
    generator as written, whose own checks then say what is wrong."""
    static = tuple(name for name in inspect.signature(generator).parameters if name != "key")
    jitted = jax.jit(generator, static_argnames=static)

    @functools.wraps(generator)
    def run(key, *args, **config):
        check_key(key)  # under jit an int seed would be traced into an array and slip through
        try:
            hash((args, tuple(config.items())))
        except TypeError:
            return generator(key, *args, **config)
        return jitted(key, *args, **config)

    return run
