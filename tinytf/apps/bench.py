"""Benchmarks: `tinytf bench attention | train | presets | lessons`.

Speed targets live here, not in timed tests. Every figure is a ratio against a
peer measured in the same run on the same machine.

  attention: tinytf dense vs flash (tiles, online softmax) vs jax.nn.dot_product_attention,
             time per call and peak memory of a call (each in a fresh process), at several lengths.
  train:     see `bench_train.py` (fit vs a per-step nnx.jit loop vs flax.nnx stock layers).
  presets:   the tiny LM and ViT presets trained from scratch: accuracy, wall and CPU time.
  lessons:   see `bench_lessons.py` (each lesson's quick mode, cold and warm compilation cache).
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
from tinytf.apps.bench_lessons import cmd_bench_lessons
from tinytf.apps.bench_train import bench_presets, bench_train
from tinytf.variant_contract import load_variant


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


def _proc_status(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _attention_path(name: str, causal: bool, chunk_size: int, variant):
    if name == "jax.nn":
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal)
    if variant is not None and variant.fn is not None:  # a researcher's own attention function
        return lambda q, k, v: variant.fn(q, k, v, A.causal_mask(q.shape[1], k.shape[1]) if causal else None,
                                          None)[0]
    if variant is not None:  # a named variant: its attention maths (the layer around it is not timed)
        def attend(q, k, v):
            sink = jnp.zeros((q.shape[2],)) if variant.sink else None
            return A.dot_product_attention(q, k, v, is_causal=causal, normalizer=variant.normalizer, sink=sink,
                                           window=variant.window, logit_cap=variant.logit_cap)[0]
        return attend
    chunk = None if name == "dense" else chunk_size
    return lambda q, k, v: A.dot_product_attention(q, k, v, is_causal=causal, chunk_size=chunk)[0]


def _measure(spec: dict) -> dict:
    """Run one (length, path) in this (fresh) process: time per call and peak memory of a call.

    Peak memory = the process's resident-set high-water mark during the calls minus its size
    just before (after compiling, with the inputs in memory), with the high-water mark reset
    first (Linux: /proc/self/clear_refs); it counts every buffer the computation really touched.
    """
    from tinytf.variants import get_variant

    variant = get_variant(spec["variant"]) if spec["variant"] else None
    T, batch, heads, K, H = spec["length"], spec["batch"], spec["heads"], spec["kv_heads"], spec["head_dim"]
    keys = jax.random.split(jax.random.key(T), 3)
    q = jax.random.normal(keys[0], (batch, T, heads, H), jnp.float32)
    k, v = (jax.random.normal(key, (batch, T, K, H), jnp.float32) for key in keys[1:])
    f = _attention_path(spec["path"], spec["causal"], spec["chunk_size"], variant)
    fn = jax.jit(jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2)) if spec["backward"] else f)
    compiled = fn.lower(q, k, v).compile()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        before = _proc_status("VmRSS")
    except OSError:
        before = None
    seconds = _time(compiled, q, k, v, repeats=spec["repeats"])  # its warm-up call allocates everything
    peak = _proc_status("VmHWM")
    return {"seconds": seconds, "peak_bytes": None if before is None or peak is None else max(peak - before, 0),
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes)}


def bench_attention(lengths=(1024, 4096, 16384), *, heads: int = 8, head_dim: int = 64, batch: int = 1,
                    chunk_size: int = 512, causal: bool = True, backward: bool = False, repeats: int = 3,
                    memory_fraction: float = 0.5, kv_heads: int | None = None, variant: str | None = None,
                    progress: bool | None = None) -> list[dict]:
    """Time and size dense, flash and jax.nn attention (and a variant) at each length.

    Each (length, path) runs in a fresh process, so its peak memory is its own. A path
    whose (T, S) score matrices would exceed `memory_fraction` of the available RAM
    (dense, jax.nn, a variant) is not run; its row says so.

    kv_heads: key/value heads K (grouped-query attention; must divide `heads`).
    variant: a variant name or "module:fn" with its own attention function: one more path.

    Returns:
      One dict per (length, path): length, path, seconds, peak_bytes, temp_bytes (None when skipped).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tinytf.progress import progress_bar

    K = heads if kv_heads is None else kv_heads
    if heads % K:
        raise ValueError(f"kv_heads={K} must divide heads={heads}")
    paths = ["dense", "flash", "jax.nn"] + ([f"variant {variant}"] if variant else [])
    rows = []
    bar = progress_bar(len(lengths) * len(paths), desc="bench attention", unit="run", enabled=progress)
    context = multiprocessing.get_context("spawn")
    for T in lengths:
        quadratic = batch * heads * T * T * 4 * (3 if backward else 1.5)  # the score matrices of a dense call
        for name in paths:
            row = {"length": T, "path": name, "seconds": None, "peak_bytes": None, "temp_bytes": None}
            if name != "flash" and quadratic > memory_fraction * _available_bytes():
                row["skipped"] = f"needs ~{quadratic / 2**30:.1f} GiB for the (T, S) matrices"
            else:
                spec = dict(length=T, path="variant" if name.startswith("variant") else name, batch=batch,
                            heads=heads, kv_heads=K, head_dim=head_dim, causal=causal, chunk_size=chunk_size,
                            backward=backward, repeats=repeats, variant=variant if name.startswith("variant") else None)
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    row.update(pool.submit(_measure, spec).result())
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows


def _print_attention(rows: list[dict]) -> None:
    print(f"{'length':>7} {'path':>16} {'time (s)':>10} {'peak memory':>12} {'time vs jax.nn':>15}")
    ref = {r["length"]: r for r in rows if r["path"] == "jax.nn"}
    for r in rows:
        t = "skipped" if r["seconds"] is None else f"{r['seconds']:.4f}"
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f} MB"
        base = ref.get(r["length"], {}).get("seconds")
        ratio = f"{r['seconds'] / base:.2f}x" if r["seconds"] and base else "-"
        print(f"{r['length']:>7} {r['path']:>16} {t:>10} {peak:>12} {ratio:>15}")


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
    if args.variant:
        load_variant(args.variant)  # the contract, in seconds, before anything is timed
    rows = bench_attention(tuple(args.lengths), heads=args.heads, head_dim=args.head_dim, chunk_size=args.chunk,
                           backward=args.backward, repeats=args.repeats, kv_heads=kv, variant=args.variant)
    cache = kv_cache_bytes(args.heads, kv, args.head_dim)
    if args.json:
        print(json.dumps({"device": jax.devices()[0].device_kind, "rows": rows, "kv_cache": cache}))
    else:
        print(f"attention, B=1, N={args.heads}, K={kv} key/value heads, H={args.head_dim}, causal, "
              f"{'forward+backward' if args.backward else 'forward'}, on {jax.devices()[0].device_kind}")
        _print_attention(rows)
        print("peak memory = resident-set growth during a call, measured in a fresh process per row; "
              "'skipped' = the (T, S) matrices would not fit in half the free RAM")
        print(f"KV cache (float32) per token and layer: {cache['per_token_per_layer_multi_head']} B with {args.heads} "
              f"key/value heads, {cache['per_token_per_layer_grouped']} B with {kv} "
              f"({cache['saving']:.1f}x smaller)")
    return 0


def _cmd_train(args) -> int:

    if args.variant:
        load_variant(args.variant)  # the contract, in seconds, before anything trains
    result = bench_train(steps=args.steps, print_fn=None if args.json else print, variant=args.variant)
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
    a.add_argument("--variant", default=None,
                   help="also time this attention variant (a name, module:fn or path/to/file.py:fn)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_cmd_attention)
    t = bsub.add_parser("train", help="fit vs a per-step nnx.jit loop vs flax.nnx stock layers")
    t.add_argument("--steps", type=positive_int, default=200)
    t.add_argument("--variant", default=None,
                   help="attention of tinytf's presets (a name, module:fn or path/to/file.py:fn); "
                        "the flax.nnx stock twins stay softmax")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=_cmd_train)
    m = bsub.add_parser("presets", help="train the tiny LM and ViT presets from scratch: accuracy and time")
    m.add_argument("--seed", type=nonnegative_int, default=0)
    m.add_argument("--steps", type=positive_int, default=300)
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=_cmd_presets)
    le = bsub.add_parser("lessons", help="every lesson's quick mode, cold and warm compilation cache: wall seconds")
    le.add_argument("ids", nargs="*", help="lesson ids (default: all)")
    le.add_argument("--json", action="store_true", help="print one JSON object")
    le.set_defaults(func=cmd_bench_lessons)
