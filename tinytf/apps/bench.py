"""Benchmarks: `tinytf bench attention` and `tinytf bench train`.

Speed targets live here, not in timed tests. Every figure is a ratio against a
peer measured in the same run on the same machine.

  attention: tinytf dense vs flash (tiles, online softmax) vs jax.nn.dot_product_attention,
             time per call and XLA's compiled working-set size, at several lengths.
  train:     see `bench_train.py` (fit vs a per-step nnx.jit loop vs flax.nnx stock layers).
  presets:   the tiny LM and ViT presets trained from scratch: accuracy, wall and CPU time.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from tinytf import attention as A
from tinytf.apps.args import nonnegative_int, positive_int
from tinytf.apps.bench_train import bench_presets, bench_train


def _time(fn, *args, repeats: int = 3) -> float:
    """Median wall time of fn(*args) in seconds, after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def bench_attention(lengths=(1024, 4096, 16384), *, heads: int = 8, head_dim: int = 64, batch: int = 1,
                    chunk_size: int = 512, causal: bool = True, backward: bool = False, repeats: int = 3,
                    memory_fraction: float = 0.5, kv_heads: int | None = None) -> list[dict]:
    """Time and size dense, flash and jax.nn attention at each length.

    A path whose compiled working set would exceed `memory_fraction` of the
    available RAM is not run; its row says so (with the bytes it would need).

    kv_heads: key/value heads K (grouped-query attention; must divide `heads`).

    Returns:
      One dict per (length, path): length, path, seconds (or None), temp_bytes.
    """
    K = heads if kv_heads is None else kv_heads
    if heads % K:
        raise ValueError(f"kv_heads={K} must divide heads={heads}")
    paths = {
        "dense": lambda q, k, v: A.dot_product_attention(q, k, v, is_causal=causal, chunk_size=None)[0],
        "flash": lambda q, k, v: A.dot_product_attention(q, k, v, is_causal=causal, chunk_size=chunk_size)[0],
        "jax.nn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal),
    }
    rows = []
    for T in lengths:
        keys = jax.random.split(jax.random.key(T), 3)
        q = jax.random.normal(keys[0], (batch, T, heads, head_dim), jnp.float32)
        k, v = (jax.random.normal(key, (batch, T, K, head_dim), jnp.float32) for key in keys[1:])
        for name, f in paths.items():
            fn = jax.jit(jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2)) if backward else f)
            compiled = fn.lower(q, k, v).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes
            row = {"length": T, "path": name, "temp_bytes": int(temp), "seconds": None}
            if temp < memory_fraction * _available_bytes():
                row["seconds"] = _time(compiled, q, k, v, repeats=repeats)
            rows.append(row)
    return rows


def _print_attention(rows: list[dict]) -> None:
    print(f"{'length':>7} {'path':>8} {'time (s)':>10} {'working set':>12} {'time vs dense':>14}")
    dense = {r["length"]: r for r in rows if r["path"] == "dense"}
    for r in rows:
        t = "skipped" if r["seconds"] is None else f"{r['seconds']:.3f}"
        d = dense[r["length"]]["seconds"]
        ratio = f"{r['seconds'] / d:.2f}x" if r["seconds"] and d else "-"
        print(f"{r['length']:>7} {r['path']:>8} {t:>10} {r['temp_bytes'] / 2**20:>9.1f} MB {ratio:>14}")


def kv_cache_bytes(heads: int, kv_heads: int, head_dim: int, bytes_per_value: int = 4) -> dict:
    """KV-cache bytes per token and layer (keys + values) with N query heads and K key/value heads."""
    full, grouped = 2 * heads * head_dim * bytes_per_value, 2 * kv_heads * head_dim * bytes_per_value
    return {"per_token_per_layer_multi_head": full, "per_token_per_layer_grouped": grouped,
            "saving": full / grouped}


def _cmd_attention(args) -> int:
    kv = args.kv_heads or args.heads
    if args.heads % kv:
        print(f"error: --kv-heads {kv} must divide --heads {args.heads}", file=sys.stderr)
        return 2
    rows = bench_attention(tuple(args.lengths), heads=args.heads, head_dim=args.head_dim, chunk_size=args.chunk,
                           backward=args.backward, repeats=args.repeats, kv_heads=kv)
    cache = kv_cache_bytes(args.heads, kv, args.head_dim)
    if args.json:
        print(json.dumps({"device": jax.devices()[0].device_kind, "rows": rows, "kv_cache": cache}))
    else:
        print(f"attention, B=1, N={args.heads}, K={kv} key/value heads, H={args.head_dim}, causal, "
              f"{'forward+backward' if args.backward else 'forward'}, on {jax.devices()[0].device_kind}")
        _print_attention(rows)
        print("working set = XLA's compiled temporary buffers; 'skipped' = would not fit in half the free RAM")
        print(f"KV cache (float32) per token and layer: {cache['per_token_per_layer_multi_head']} B with {args.heads} "
              f"key/value heads, {cache['per_token_per_layer_grouped']} B with {kv} "
              f"({cache['saving']:.1f}x smaller)")
    return 0


def _cmd_train(args) -> int:

    result = bench_train(steps=args.steps, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_presets(args) -> int:
    result = bench_presets(seed=args.seed, steps=args.steps, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: attention paths, training throughput")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    a = bsub.add_parser("attention", help="dense vs flash vs jax.nn attention: time and memory")
    a.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 4096, 16384])
    a.add_argument("--heads", type=positive_int, default=8)
    a.add_argument("--kv-heads", type=positive_int, default=None,
                   help="key/value heads for grouped-query attention (must divide --heads; default: --heads)")
    a.add_argument("--head-dim", type=positive_int, default=64)
    a.add_argument("--chunk", type=positive_int, default=512)
    a.add_argument("--repeats", type=positive_int, default=3)
    a.add_argument("--backward", action="store_true", help="time forward + backward")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_cmd_attention)
    t = bsub.add_parser("train", help="fit vs a per-step nnx.jit loop vs flax.nnx stock layers")
    t.add_argument("--steps", type=positive_int, default=200)
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=_cmd_train)
    m = bsub.add_parser("presets", help="train the tiny LM and ViT presets from scratch: accuracy and time")
    m.add_argument("--seed", type=nonnegative_int, default=0)
    m.add_argument("--steps", type=positive_int, default=300)
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=_cmd_presets)
