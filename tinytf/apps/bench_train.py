"""`tinytf bench train`: fit vs a per-step nnx.jit loop vs flax.nnx stock layers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf.train.history import History
from tinytf.apps import bench_torch
from tinytf.checks import check_positive
from tinytf.progress import progress_bar
from tinytf.train.loop import fit
from tinytf.train.step import unpack_loss
from tinytf.train.optim import make_optimizer
from tinytf.train.losses import cross_entropy

# -------------------------------------------------------------------------- benchmark


def _stock_blocks(d_model: int, num_heads: int, layers: int, rngs: nnx.Rngs) -> nnx.List:
    """Pre-norm transformer blocks from Flax's stock layers (nnx.MultiHeadAttention, nnx.Linear)."""
    return nnx.List([nnx.Dict(
        norm1=nnx.LayerNorm(d_model, rngs=rngs), norm2=nnx.LayerNorm(d_model, rngs=rngs),
        attn=nnx.MultiHeadAttention(num_heads, d_model, decode=False, rngs=rngs),
        up=nnx.Linear(d_model, 4 * d_model, rngs=rngs),
        down=nnx.Linear(4 * d_model, d_model, rngs=rngs)) for _ in range(layers)])


def _stock_forward(blocks, x, mask=None):
    """x (B, T, D) through the stock blocks: x + attn(norm(x)), x + MLP(norm(x))."""
    for b in blocks:
        x = x + b.attn(b.norm1(x), mask=mask)
        x = x + b.down(jax.nn.gelu(b.up(b.norm2(x))))
    return x


class _BenchLM(nnx.Module):
    """A tiny pre-norm transformer LM from Flax's stock layers, only for the benchmark."""

    def __init__(self, vocab: int = 16, d_model: int = 32, num_heads: int = 4, layers: int = 2,
                 length: int = 16, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (length, d_model)))
        self.blocks = _stock_blocks(d_model, num_heads, layers, rngs)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, vocab, rngs=rngs)

    def __call__(self, tokens):  # (B, T) -> (B, T, V)
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:T]  # (B, T, D)
        mask = nnx.make_causal_mask(tokens)  # (B, 1, T, T)
        x = _stock_forward(self.blocks, x, mask)
        return self.head(self.norm(x))


def _bench_copy_task(batch_size: int, length: int = 16, vocab: int = 16):
    """Data and loss of the benchmark: repeat a random half-sequence (induction/copy)."""

    def data(key):
        half = jax.random.randint(key, (batch_size, length // 2), 1, vocab)  # (B, T/2)
        return jnp.concatenate([half, half], axis=1)  # (B, T)

    def loss_fn(model, tokens):
        logits = model(tokens[:, :-1])  # (B, T-1, V) predicts tokens[:, 1:]
        copied = jnp.arange(1, length) >= length // 2  # (T-1,) positions in the copied half
        mask = jnp.broadcast_to(copied, tokens[:, 1:].shape)
        return cross_entropy(logits, tokens[:, 1:], mask)

    return data, loss_fn


def benchmark_fit_vs_nnx_jit(make_model: Callable[[], nnx.Module] | None = None, data=None,
                             loss_fn: Callable | None = None, *, steps: int = 300,
                             batch_size: int = 32, repeats: int = 3, name: str | None = None,
                             print_fn: Callable | None = print) -> dict[str, float]:
    """Time training steps of one model three ways, in one process, and print the ratios.

    1. ``nnx.jit`` per step: ``nnx.Optimizer`` and an ``@nnx.jit`` train step, the
       textbook NNX loop (batches pre-made on the device, so only the step is timed);
    2. ``fit`` with one step per call: a plain ``jax.jit`` over ``nnx.split`` state;
    3. ``fit`` as used (many steps per call in an on-device loop).
    Compilation is excluded from every rate; each rate is the best of ``repeats``
    timings (on a shared machine the best is the least disturbed). Same optimizer and
    data in all three.

    Args:
      make_model: ``() -> nnx.Module``; default a 2-layer d=32 transformer LM built from
        Flax's stock layers on a copy task (T=16, V=16).
      data: ``key -> batch`` (required with ``make_model``); loss_fn: ``(model, batch)
        -> loss``.
      steps: steps per timing; batch_size: B of the default task; repeats: timings
        per method.
      name: label for the printout; print_fn: where lines go (None: silent).

    Returns:
      {"nnx_jit_steps_per_s", "fit_step_per_call_steps_per_s", "fit_steps_per_s",
       "fit_vs_nnx_jit", "fit_step_per_call_vs_nnx_jit", "nnx_jit_compile_s",
       "fit_compile_s", "steps", "batch_size", "repeats"}.
    """
    if make_model is None:
        data, loss_fn = _bench_copy_task(batch_size)
        make_model = lambda: _BenchLM(rngs=nnx.Rngs(0))  # noqa: E731
        name = name or f"stock-nnx LM, 2 layers, d=32, B={batch_size}, T=16"
    elif data is None or loss_fn is None:
        raise ValueError("benchmark_fit_vs_nnx_jit: give data and loss_fn with make_model")
    check_positive("steps", steps)
    check_positive("repeats", repeats)
    scalar_loss = lambda m, b: unpack_loss(loss_fn(m, b))[0]  # noqa: E731

    # 1. The per-step nnx.jit loop.
    model = make_model()
    optimizer = nnx.Optimizer(model, make_optimizer(3e-3, steps + 2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(scalar_loss)(model, batch)
        optimizer.update(model, grads)
        return loss

    make_batch = jax.jit(data)
    batches = [make_batch(jax.random.fold_in(jax.random.key(0), i)) for i in range(8)]
    t0 = time.perf_counter()
    jax.block_until_ready(train_step(model, optimizer, batches[0]))  # compile
    nnx_compile = time.perf_counter() - t0
    jax.block_until_ready(train_step(model, optimizer, batches[1]))
    nnx_rate = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            loss = train_step(model, optimizer, batches[i % len(batches)])
        jax.block_until_ready(loss)
        nnx_rate = max(nnx_rate, steps / (time.perf_counter() - t0))

    # 2. and 3. fit, one step per call and as used (compile time is measured separately).
    def best_fit(**kwargs) -> History:
        runs = [fit(make_model(), data, steps=steps, loss_fn=loss_fn, progress=False, **kwargs)
                for _ in range(repeats)]
        return max(runs, key=lambda h: h.steps_per_s)

    one, many = best_fit(steps_per_call=1), best_fit()
    result = {"nnx_jit_steps_per_s": nnx_rate,
              "fit_step_per_call_steps_per_s": one.steps_per_s,
              "fit_steps_per_s": many.steps_per_s,
              "fit_step_per_call_vs_nnx_jit": one.steps_per_s / nnx_rate,
              "fit_vs_nnx_jit": many.steps_per_s / nnx_rate,
              "nnx_jit_compile_s": nnx_compile, "fit_compile_s": many.compile_time_s,
              "steps": steps, "batch_size": batch_size, "repeats": repeats}
    if print_fn is not None:
        print_fn(f"train steps/s, {name or 'model'} ({steps} steps, best of {repeats}, "
                 f"{jax.devices()[0].platform}, compile excluded)")
        for label, rate, comp in (("nnx.jit per step", nnx_rate, nnx_compile),
                                  ("fit, 1 step per call", one.steps_per_s, one.compile_time_s),
                                  ("fit (on-device loop)", many.steps_per_s, many.compile_time_s)):
            print_fn(f"  {label:<24}{rate:10.1f} steps/s  {rate / nnx_rate:6.2f}x  "
                     f"(compile {comp:.1f} s)")
    return result


# ------------------------------------------------------------------ tinytf presets
class _StockViT(nnx.Module):
    """ViTConfig.tiny16() rebuilt from Flax's stock layers (nnx.Conv, nnx.MultiHeadAttention)."""

    def __init__(self, d_model: int = 64, num_heads: int = 4, layers: int = 2, patch: int = 4, image: int = 16,
                 num_classes: int = 10, *, rngs: nnx.Rngs):
        self.patch = nnx.Conv(3, d_model, kernel_size=(patch, patch), strides=(patch, patch), rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, d_model)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1 + (image // patch) ** 2, d_model)))
        self.blocks = _stock_blocks(d_model, num_heads, layers, rngs)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, num_classes, rngs=rngs)

    def __call__(self, images):  # (B, H, W, C) -> (B, classes)
        x = self.patch(images)
        B = x.shape[0]
        x = x.reshape(B, -1, x.shape[-1])  # (B, P, D)
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (B, 1, x.shape[-1])), x], axis=1) + self.pos[...]
        x = _stock_forward(self.blocks, x)
        return self.head(self.norm(x)[:, 0])


def _best_seconds(f: Callable, arg, repeats: int) -> float:
    """The fastest of `repeats` timed calls f(arg), after one untimed call (compiling)."""
    jax.block_until_ready(f(arg))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(arg))
        best = min(best, time.perf_counter() - t0)
    return best


def _matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Achieved float32 GFLOP/s of an n x n matmul on this device: the roofline to compare with."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    return 2 * n**3 / _best_seconds(jax.jit(lambda a: a @ a), a, repeats) / 1e9


def _step_loss(model: nnx.Module, loss_fn) -> tuple[Callable, nnx.State]:
    """(the scalar loss as a function of (parameters, batch), the parameters)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return lambda p, b: unpack_loss(loss_fn(nnx.merge(graphdef, p, rest), b))[0], params


def _step_dots(model: nnx.Module, batch, loss_fn) -> list[tuple]:
    """Every matmul (dot_general) of one training step's forward + backward, as
    (lhs shape, rhs shape, dimension_numbers, dtype), read from the gradient's jaxpr. A matmul
    in a `scan` body is listed once per iteration; one in a `while` body once (its trip count
    is not in the jaxpr)."""
    loss, params = _step_loss(model, loss_fn)
    found = []

    def walk(jaxpr, times: int):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                lhs, rhs = (v.aval for v in eqn.invars)
                found.extend([(lhs.shape, rhs.shape, eqn.params["dimension_numbers"], lhs.dtype)] * times)
            inner_times = times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
            for value in eqn.params.values():  # the bodies of loops, remat, custom VJPs, ...
                for sub in value if isinstance(value, (list, tuple)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner, inner_times)

    walk(jax.make_jaxpr(jax.grad(loss))(params, batch).jaxpr, 1)
    return found


def _dots_gflops(dots: list[tuple], repeats: int = 50) -> tuple[float, float]:
    """(GFLOP, achieved GFLOP/s) of the matmuls in `dots` run alone, at their own shapes, in one
    compiled program: the most a step made of these matmuls could reach on this device."""
    gflop = 0.0
    for lhs, rhs, ((lc, _), (lb, _)), _ in dots:
        contract, batch = np.prod([lhs[i] for i in lc]), np.prod([lhs[i] for i in lb])
        gflop += 2 * np.prod(lhs) * np.prod(rhs) / contract / batch / 1e9
    operands = [(jnp.ones(lhs, dtype), jnp.ones(rhs, dtype)) for lhs, rhs, _, dtype in dots]
    numbers = [dn for _, _, dn, _ in dots]
    run = jax.jit(lambda ops: [jax.lax.dot_general(a, b, dn) for (a, b), dn in zip(ops, numbers)])
    return float(gflop), float(gflop / _best_seconds(run, operands, repeats))


def _step_attention(model: nnx.Module, batch, loss_fn) -> list[tuple]:
    """Every attention call (`MultiHeadAttention.attend`) of one forward pass, as (layer,
    (q, k, v) shapes and dtypes, keyword arguments with arrays as their shapes), recorded
    while the loss is traced (nothing runs)."""
    from tinytf.nn import MultiHeadAttention

    calls, attend = [], MultiHeadAttention.attend

    def recording(layer, q, k, v, **kwargs):
        spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x  # noqa: E731
        calls.append((layer, tuple(spec(x) for x in (q, k, v)), jax.tree.map(spec, kwargs)))
        return attend(layer, q, k, v, **kwargs)

    MultiHeadAttention.attend = recording
    try:
        jax.eval_shape(lambda b: unpack_loss(loss_fn(model, b))[0], batch)
    finally:
        MultiHeadAttention.attend = attend
    return calls


def _attention_seconds(calls: list[tuple], repeats: int = 50) -> float:
    """Seconds for the recorded attention calls' forward + backward (gradients of q, k, v),
    run alone at their own shapes in one compiled program: the attention's share of a step."""
    key = jax.random.key(0)
    qkv = [tuple(jax.random.normal(jax.random.fold_in(key, 3 * i + j), x.shape, x.dtype) for j, x in enumerate(s))
           for i, (_, s, _) in enumerate(calls)]
    kwargs = [jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, kw)
              for _, _, kw in calls]  # a mask of ones, lengths of one: the cost of any mask

    def total(qkv):
        return sum(layer.attend(*args, **kw)[0].astype(jnp.float32).sum()
                   for (layer, _, _), args, kw in zip(calls, qkv, kwargs))

    return _best_seconds(jax.jit(jax.grad(total)), qkv, repeats)


def _step_costs(model: nnx.Module, batch, loss_fn, repeats: int = 50) -> dict[str, float]:
    """One step's loss gradient compiled once: its FLOPs (XLA's cost analysis), and the
    seconds of the forward alone and of the forward + backward alone, each one compiled program
    (best of `repeats`): what the backward costs next to the forward (about 2x in FLOPs)."""
    loss, params = _step_loss(model, loss_fn)
    gradient = jax.jit(jax.grad(loss)).lower(params, batch).compile()
    cost = gradient.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    forward = jax.jit(loss)
    return {"flops": float(cost.get("flops", float("nan"))),
            "forward_seconds": _best_seconds(lambda a: forward(*a), (params, batch), repeats),
            "forward_backward_seconds": _best_seconds(lambda a: gradient(*a), (params, batch), repeats)}


def bench_train(*, steps: int = 200, repeats: int = 3, print_fn: Callable | None = print,
                progress: bool | None = None, variant: str | None = None) -> dict:
    """`tinytf bench train`: the tiny LM and ViT presets, three ways each, in one run.

    `variant` (a name, module:fn or path/to/file.py:fn) sets the attention of tinytf's
    presets; the flax.nnx stock twins keep softmax attention, so their ratio then also
    measures the variant's cost.

    For each preset: a per-step `nnx.jit` loop, `fit` (one step per call and as used),
    and `fit` on the same architecture built from `flax.nnx` stock layers; steps/s,
    ratios, and achieved GFLOP/s against a float32 matmul measured in the same run, beside the
    same step's matmuls (every dot_general of its forward + backward) run alone at their own
    shapes: the part of the gap that small matrices explain, and the part the rest of the step
    costs; its attention calls (every `MultiHeadAttention.attend`, forward + backward) run
    alone; its loss's forward and forward + backward run alone (what the backward costs), and
    the step time that 50 % of the matmul rate would mean. When PyTorch is installed
    (`pip install tinytf[bench]`), the tiny LM and ViT are also trained in PyTorch eager (`bench_torch.py`) and the ratio is reported, with PyTorch's fused
    attention timed at the same shapes.
    progress: a bar over the presets (None: follow `tinytf.progress`); the timed runs draw none.
    """
    from tinytf.data import copy_task, shapes_classification
    from tinytf.models import CausalLM, LMConfig, ViT, ViTConfig
    from tinytf.variants import get_variant

    attention = get_variant(variant)
    peak = _matmul_gflops()
    lm_data = lambda key: copy_task(key, batch_size=32, length=16, vocab_size=64)["tokens"]  # noqa: E731

    def lm_loss(model, tokens):
        logits = model(tokens[:, :-1])
        mask = jnp.broadcast_to(jnp.arange(1, tokens.shape[1]) >= tokens.shape[1] // 2, tokens[:, 1:].shape)
        return cross_entropy(logits, tokens[:, 1:], mask)

    def vit_data(key):
        batch = shapes_classification(key, batch_size=64, image_size=16)
        return batch["images"], batch["labels"]

    def vit_loss(model, batch):
        images, labels = batch
        return cross_entropy(model(images), labels)

    presets = {
        "LMConfig.micro() B=16 T=32": (lambda: CausalLM(LMConfig.micro(vocab_size=64, attention=attention), rngs=nnx.Rngs(0)),
                                       lambda: _BenchLM(vocab=64, d_model=32, num_heads=2, layers=2, length=32,
                                                        rngs=nnx.Rngs(0)),
                                       lambda key: lm_data(key)[:16], lm_loss),
        "LMConfig.tiny() B=32 T=32": (lambda: CausalLM(LMConfig.tiny(attention=attention), rngs=nnx.Rngs(0)),
                                      lambda: _BenchLM(vocab=64, d_model=64, num_heads=4, layers=2, length=32,
                                                       rngs=nnx.Rngs(0)), lm_data, lm_loss),
        "ViTConfig.tiny16() B=64": (lambda: ViT(ViTConfig.tiny16(num_classes=4, attention=attention), rngs=nnx.Rngs(0)),
                                    lambda: _StockViT(num_classes=4, rngs=nnx.Rngs(0)), vit_data, vit_loss),
    }
    results = {"matmul_gflops": peak, "presets": {}}
    bar = progress_bar(len(presets), desc="bench train", unit="preset", enabled=progress)
    if print_fn is print:  # lines go above the bar, not through it
        print_fn = lambda line: bar.write(line, file=sys.stdout)  # noqa: E731
    for name, (make, make_stock, data, loss_fn) in presets.items():
        bar.set_postfix_str(name)
        r = benchmark_fit_vs_nnx_jit(make, data, loss_fn, steps=steps, repeats=repeats, name=name,
                                     print_fn=print_fn)
        stock = max((fit(make_stock(), data, steps=steps, loss_fn=loss_fn, progress=False) for _ in range(repeats)),
                    key=lambda h: h.steps_per_s)
        batch = jax.jit(data)(jax.random.key(0))
        model = make()
        costs = _step_costs(model, batch, loss_fn)
        flops = costs["flops"]
        dots_gflop, dots_rate = _dots_gflops(_step_dots(model, batch, loss_fn))
        attends = _step_attention(model, batch, loss_fn)
        r.update(matmul_gflop=dots_gflop, matmul_share_of_flops=dots_gflop * 1e9 / flops,
                 matmuls_alone_gflops=dots_rate, matmuls_alone_fraction_of_matmul=dots_rate / peak,
                 fit_seconds_per_step=1 / r["fit_steps_per_s"], matmuls_alone_seconds=dots_gflop / dots_rate,
                 attention_calls=len(attends), attention_alone_seconds=_attention_seconds(attends),
                 forward_alone_seconds=costs["forward_seconds"],
                 forward_backward_alone_seconds=costs["forward_backward_seconds"],
                 half_matmul_rate_step_seconds=flops / (0.5 * peak * 1e9),
                 stock_nnx_fit_steps_per_s=stock.steps_per_s,
                 tinytf_vs_stock_nnx=r["fit_steps_per_s"] / stock.steps_per_s,
                 step_gflop=flops / 1e9, fit_gflops=flops * r["fit_steps_per_s"] / 1e9,
                 fit_fraction_of_matmul=flops * r["fit_steps_per_s"] / 1e9 / peak)
        torch_preset = {"LMConfig.tiny() B=32 T=32": "lm", "ViTConfig.tiny16() B=64": "vit"}.get(name)
        if torch_preset and bench_torch.available():  # the same model in PyTorch eager, same threads
            threads = max(1, os.cpu_count() or 1)
            peer = bench_torch.train_rate(torch_preset, steps=steps, repeats=repeats, threads=threads)
            r.update(torch_eager_steps_per_s=peer["steps_per_s"], torch_version=peer["torch"],
                     tinytf_vs_torch_eager=r["fit_steps_per_s"] / peer["steps_per_s"])
            extras = ("mask", "bias", "window", "query_lengths", "key_lengths")
            plain = [(q.shape, k.shape, bool(kw.get("is_causal"))) for _, (q, k, _), kw in attends
                     if q.shape[2] == k.shape[2] and all(kw.get(a) is None for a in extras)]
            if len(plain) == len(attends):  # the same attention calls as PyTorch's fused SDPA
                r.update(torch_sdpa_alone_seconds=bench_torch.attention_seconds(plain, threads=threads))
        results["presets"][name] = r
        if print_fn is not None and "torch_eager_steps_per_s" in r:
            print_fn(f"  {'PyTorch ' + r['torch_version'] + ' eager':<24}{r['torch_eager_steps_per_s']:10.1f} steps/s  "
                     f"(tinytf fit is {r['tinytf_vs_torch_eager']:.2f}x PyTorch eager)")
        if print_fn is not None:
            print_fn(f"  {'fit, flax.nnx stock layers':<24}{stock.steps_per_s:10.1f} steps/s  "
                     f"(tinytf layers are {r['tinytf_vs_stock_nnx']:.2f}x the stock-layer speed)")
            print_fn(f"  achieved {r['fit_gflops']:.2f} GFLOP/s = {100 * r['fit_fraction_of_matmul']:.1f}% of a "
                     f"1024x1024 matmul ({peak:.1f} GFLOP/s); {r['step_gflop'] * 1e3:.1f} MFLOP per step")
            print_fn(f"  the step's {r['matmul_share_of_flops']:.0%} of FLOPs in matmuls, run alone at their own "
                     f"shapes: {1e3 * r['matmuls_alone_seconds']:.2f} ms of the {1e3 * r['fit_seconds_per_step']:.2f} ms "
                     f"step, {100 * r['matmuls_alone_fraction_of_matmul']:.1f}% of the 1024x1024 rate (small "
                     "matmuls are slower; the rest of the step is everything else)")
            print_fn(f"  forward alone {1e3 * r['forward_alone_seconds']:.2f} ms, forward + backward "
                     f"{1e3 * r['forward_backward_alone_seconds']:.2f} ms (the backward costs "
                     f"{r['forward_backward_alone_seconds'] / r['forward_alone_seconds'] - 1:.1f}x the forward; ~2x "
                     f"in FLOPs); a step at 50% of the 1024x1024 rate would take "
                     f"{1e3 * r['half_matmul_rate_step_seconds']:.2f} ms")
            sdpa = (f"; PyTorch's fused scaled_dot_product_attention at the same shapes: "
                    f"{1e3 * r['torch_sdpa_alone_seconds']:.2f} ms" if "torch_sdpa_alone_seconds" in r else "")
            print_fn(f"  its {r['attention_calls']} attention calls (forward + backward), run alone at their own "
                     f"shapes: {1e3 * r['attention_alone_seconds']:.2f} ms of the step{sdpa}")
        bar.update(1)
    bar.close()
    return results


def bench_presets(*, seed: int = 0, steps: int = 300, print_fn: Callable | None = print,
                  progress: bool | None = None) -> dict:
    """`tinytf bench presets`: train the tiny presets from scratch and report accuracy and time.

    LMConfig.tiny() on the induction/copy task (16 random tokens then the same 16; accuracy on
    the copied half) and ViTConfig.tiny16() on 16x16 shapes (4 classes), each for `steps`
    steps of `fit`, evaluated on fresh held-out batches. Times are wall seconds and this
    process's CPU seconds (all threads; compilation included). progress: fit's bars (None: follow
    `tinytf.progress`).
    """
    import functools

    from tinytf import data
    from tinytf.models import CausalLM, LMConfig, ViT, ViTConfig
    from tinytf.train.losses import accuracy

    results = {}
    t0, c0 = time.perf_counter(), time.process_time()
    copy = functools.partial(data.copy_task, batch_size=16, length=16, vocab_size=64)
    lm = CausalLM(LMConfig.tiny(), rngs=nnx.Rngs(seed))
    fit(lm, copy, steps=steps, loss_fn=lambda m, b: cross_entropy(m(b["tokens"]), b["targets"], b["loss_mask"]),
        learning_rate=3e-3, seed=seed, progress=progress)
    held = data.copy_task(jax.random.key(10_000 + seed), batch_size=512, length=16, vocab_size=64)
    results["lm_induction_accuracy"] = float(accuracy(lm(held["tokens"]), held["targets"], held["loss_mask"]))
    results["lm_wall_s"], results["lm_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    shapes = functools.partial(data.shapes_classification, batch_size=64, image_size=16, num_classes=4)
    vit = ViT(ViTConfig.tiny16(num_classes=4), rngs=nnx.Rngs(seed))
    fit(vit, shapes, steps=steps, loss_fn=lambda m, b: cross_entropy(m(b["images"]), b["labels"]),
        learning_rate=3e-3, seed=seed, progress=progress)
    held = data.shapes_classification(jax.random.key(10_000 + seed), batch_size=1024, image_size=16, num_classes=4)
    results["vit_shapes_accuracy"] = float(accuracy(vit(held["images"]), held["labels"]))
    results["vit_wall_s"], results["vit_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    if print_fn is not None:
        print_fn(f"LMConfig.tiny() induction (copied half), {steps} steps B=16: accuracy "
                 f"{results['lm_induction_accuracy']:.3f}  ({results['lm_wall_s']:.1f} s wall, "
                 f"{results['lm_cpu_s']:.1f} s CPU)")
        print_fn(f"ViTConfig.tiny16() shapes (4 classes), {steps} steps B=64: accuracy "
                 f"{results['vit_shapes_accuracy']:.3f}  ({results['vit_wall_s']:.1f} s wall, "
                 f"{results['vit_cpu_s']:.1f} s CPU)")
    return results
