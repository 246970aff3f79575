"""Which heads matter? Head importance and pruning without retraining.

Michel, Levy & Neubig 2019 ("Are Sixteen Heads Really Better than One?") put a
gate xi_h in front of every head's output (xi = 1 leaves the model unchanged)
and score each head by how much the loss reacts to it:

    I_h = E_x | dL(x) / d xi_h |  at xi = 1,

a first-order Taylor estimate of the loss change when the head is removed,
normalised by the l2 norm within each layer. Writing 0 into a gate prunes that
head; nothing is retrained. A ranking computed once can fail at high sparsity;
re-estimating importance as heads go is the usual remedy, and not always better:
the heads lesson compares both.

In tinytf every `MultiHeadAttention` owns such a gate: a `HeadGate` variable of
shape (N,), ones by default (`tinytf.nn.HeadGate`). Layers are named by their
module path ("blocks.0.attn"), like `capture_attention`'s keys.

Reading order: `head_gates`, `set_head_mask`, `head_mask` (context manager),
`head_importance`, `importance_order`, `prune_heads`, `pruning_curve`,
`jitted_metric`, `compare_pruning_orders`, `pruning_summary`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tinytf.nn import HeadGate

Array = jax.Array
Head = tuple[str, int]  # (layer name, head index)


def _gate_type(gate_type):
    """The gate Variable class: tinytf's HeadGate unless a custom model brings its own."""
    return HeadGate if gate_type is None else gate_type


def _path_name(path) -> str:
    """('blocks', 0, 'attn', 'head_gate') -> 'blocks.0.attn' (the owning module)."""
    return ".".join(str(p) for p in path[:-1])


def _gate_vars(model, gate_type=None) -> dict:
    """{layer name: gate Variable} for every head gate in the model, in graph order."""
    gt = _gate_type(gate_type)
    found = {_path_name(path): node for path, node in nnx.iter_graph(model) if isinstance(node, gt)}
    if not found:
        raise ValueError(f"model {type(model).__name__} has no {gt.__name__} variables: nothing to mask")
    return found


def head_gates(model, *, gate_type=None) -> dict[str, Array]:
    """Current gate values {layer name: (N,)} (ones for an unpruned model)."""
    return {name: var[...] for name, var in _gate_vars(model, gate_type).items()}


def set_head_mask(model, masks: Mapping[str, object], *, gate_type=None) -> dict[str, Array]:
    """Write gate values into the model (0 = head removed, 1 = kept); other layers are untouched.

    Args:
      model: an NNX model whose attention layers own a `HeadGate`.
      masks: {layer name: (N,) values}.

    Returns:
      the previous gate values of *all* layers, so `set_head_mask(model, prev)`
      restores the model.
    """
    gates = _gate_vars(model, gate_type)
    unknown = [n for n in masks if n not in gates]
    if unknown:
        raise ValueError(f"masks names unknown layers {unknown}: the model's gated layers are {list(gates)}")
    previous = {name: var[...] for name, var in gates.items()}
    for name, value in masks.items():
        var = gates[name]
        value = jnp.asarray(value, dtype=var[...].dtype)
        if value.shape != var[...].shape:
            raise ValueError(f"masks[{name!r}] has shape {value.shape}: expected {var[...].shape} (one value per head)")
        var[...] = value
    return previous


@contextlib.contextmanager
def head_mask(model, masks: Mapping[str, object], *, gate_type=None):
    """Context manager: apply `masks` inside the block, restore the previous gates after."""
    previous = set_head_mask(model, masks, gate_type=gate_type)
    try:
        yield model
    finally:
        set_head_mask(model, previous, gate_type=gate_type)


_JITTED: dict = {}  # (graphdef, loss_fn, gate type) -> jitted gradient function: compile once per model


def _importance_fn(model, loss_fn, gate_type):
    """batches -> {layer: mean over examples of |dL/dxi|}, with one cached jitted gradient function."""
    graphdef, _, _ = nnx.split(model, gate_type, ...)
    key = (graphdef, loss_fn, gate_type)
    try:
        summed_abs_grad = _JITTED.get(key)
    except TypeError:  # unhashable loss_fn: no caching
        key, summed_abs_grad = None, None
    if summed_abs_grad is None:
        summed_abs_grad = _gradient_fn(graphdef, loss_fn)
        if key is not None:
            if len(_JITTED) > 16:
                _JITTED.clear()
            _JITTED[key] = summed_abs_grad

    def run(batches):
        _, gates, rest = nnx.split(model, gate_type, ...)
        total, count = None, 0
        for batch in batches:
            summed, n = summed_abs_grad(gates, rest, batch)
            total = summed if total is None else jax.tree.map(jnp.add, total, summed)
            count += int(n)
        if total is None:
            raise ValueError("batches is empty: expected at least one batch to estimate head importance")
        return {_path_name(path): var[...] / count for path, var in nnx.to_flat_state(total)}

    return run


def _gradient_fn(graphdef, loss_fn):
    """A jitted (gates, rest, batch) -> (sum over examples of |dL/dxi| per gate, #examples)."""

    @jax.jit
    def summed_abs_grad(gates, rest, batch):
        def loss_of_gates(g, b):
            return loss_fn(nnx.merge(graphdef, g, rest), b)

        out = jax.eval_shape(loss_of_gates, gates, batch)
        if out.ndim == 0:  # one gradient per batch
            return jax.tree.map(jnp.abs, jax.grad(loss_of_gates)(gates, batch)), 1
        B = out.shape[0]
        leaves = jax.tree.leaves(batch)
        if all(getattr(x, "ndim", 0) >= 1 and x.shape[0] == B for x in leaves):
            # per-example gradients: vmap the gradient over batches of one example (one backward pass)
            singles = jax.tree.map(lambda x: x[:, None], batch)  # leaves (B, 1, ...)
            grads = jax.vmap(jax.grad(lambda g, b: loss_of_gates(g, b)[0]), in_axes=(None, 0))(gates, singles)
        else:  # batch leaves without a leading B axis: a Jacobian (B backward passes)
            grads = jax.jacrev(loss_of_gates)(gates, batch)
        return jax.tree.map(lambda j: jnp.abs(j).sum(0), grads), B  # leaves (N,)

    return summed_abs_grad


def _normalize(importance: dict) -> dict:
    """Divide each layer's scores by their l2 norm (Michel et al. 2019, §4.1)."""
    out = {}
    for name, v in importance.items():
        norm = jnp.sqrt((v**2).sum())
        out[name] = jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), v)
    return out


def head_importance(model, loss_fn: Callable, batches: Iterable, *, normalize: bool = True,
                    gate_type=None) -> dict[str, Array]:
    """Michel et al. 2019 head importance I_h = E_x |dL(x)/d xi_h| at the current gates.

    Math: I_h = (1/|X|) sum_x |dL(x)/d xi_h|, then I_l <- I_l / ||I_l||_2 per layer
    (Michel, Levy & Neubig 2019). The absolute value is taken per
    example, not of the averaged gradient.

    Args:
      model: NNX model with `HeadGate` variables (evaluated where they stand:
        ones for an unpruned model).
      loss_fn: (model, batch) -> loss. Return per-example losses (B,) for the
        exact per-example definition (gradients are then taken per example by
        vmapping over the batch's leading axis, so loss_fn must also accept a
        batch of one); a scalar loss makes each batch count as one example.
      batches: iterable of batches (any pytree of arrays) passed to `loss_fn`.
      normalize: apply the per-layer l2 normalisation.
      gate_type: the gate Variable class (default `tinytf.nn.HeadGate`).

    Returns:
      {layer name: (N,) importance}.
    """
    gt = _gate_type(gate_type)
    _gate_vars(model, gt)  # clear error when there are no gates
    importance = _importance_fn(model, loss_fn, gt)(batches)
    return _normalize(importance) if normalize else importance


def importance_order(importance: Mapping[str, object]) -> list[Head]:
    """Heads sorted from least to most important (the order in which to prune).

    Ties keep layer order, then head order (stable sort).
    """
    heads = [(name, h) for name, v in importance.items() for h in range(np.size(v))]
    scores = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in importance.values()])
    return [heads[i] for i in np.argsort(scores, kind="stable")]


def _masks_for(model, pruned: Sequence[Head], gate_type) -> dict[str, Array]:
    gates = head_gates(model, gate_type=gate_type)
    masks = {name: np.ones(np.shape(v), np.float32) for name, v in gates.items()}
    for name, h in pruned:
        if name not in masks or not 0 <= h < masks[name].shape[0]:
            raise ValueError(f"head ({name!r}, {h}) does not exist: layers {({n: m.shape[0] for n, m in masks.items()})}")
        masks[name][h] = 0.0
    return masks


def prune_heads(model, order: Sequence[Head], fraction: float, *, gate_type=None) -> dict[str, Array]:
    """Remove the first `round(fraction * #heads)` heads of `order` (gates to 0), no retraining.

    All other heads are set to 1. Michel et al. 2019.

    Args:
      model: NNX model with head gates.
      order: (layer, head) pairs, first = pruned first (e.g. `importance_order`).
      fraction: in [0, 1], share of *all* heads of the model to remove.

    Returns:
      the previous gate values; `set_head_mask(model, previous)` restores them.
    """
    total = sum(int(np.size(v)) for v in head_gates(model, gate_type=gate_type).values())
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: expected a value in [0, 1]")
    k = int(round(fraction * total))
    if k > len(order):
        raise ValueError(f"fraction={fraction} asks for {k} of {total} heads but order lists only {len(order)}")
    return set_head_mask(model, _masks_for(model, list(order)[:k], gate_type), gate_type=gate_type)


def pruning_curve(model, eval_fn: Callable, strategy, fractions: Sequence[float], *,
                  importance: Mapping | None = None, loss_fn: Callable | None = None,
                  batches: Iterable | None = None, num_random: int = 5, seed: int = 0,
                  return_all: bool = False, gate_type=None) -> np.ndarray:
    """Metric (e.g. accuracy) versus fraction of heads pruned, without retraining.

    Strategies (Michel et al. 2019):
      "importance" — prune least important first (one-shot ranking);
      "reverse"    — most important first;
      "random"     — mean over `num_random` random orders;
      "iterative"  — re-estimate importance on the currently pruned model before
                     each step of `fractions` (Michel et al. prune ~10% per step),
                     normalised per layer over the surviving heads only;
      or an explicit sequence of (layer, head) pairs.
    The model's gates are restored afterwards.

    Args:
      model: NNX model with head gates.
      eval_fn: model -> float (higher = better, e.g. accuracy).
      strategy: see above.
      fractions: fractions of heads pruned (sorted ascending for "iterative").
      importance: precomputed `head_importance` for "importance"/"reverse";
        otherwise computed from `loss_fn` and `batches`.
      loss_fn, batches: as in `head_importance` (needed for "iterative" and
        when `importance` is not given). `batches` is iterated once per estimate,
        so pass a list, not a generator.
      num_random, seed: random orders for "random".
      return_all: for "random", return all (num_random, K) curves.

    Returns:
      (K,) metric per fraction ((num_random, K) with `return_all`).
    """
    gt = _gate_type(gate_type)
    saved = head_gates(model, gate_type=gt)
    fractions = [float(f) for f in fractions]

    def estimate(normalize: bool = True):
        if loss_fn is None or batches is None:
            raise ValueError(f"strategy={strategy!r} needs importance= or both loss_fn= and batches=")
        return head_importance(model, loss_fn, batches, normalize=normalize, gate_type=gt)

    def curve(order):
        values = []
        for f in fractions:
            prune_heads(model, order, f, gate_type=gt)
            values.append(float(eval_fn(model)))
        return np.asarray(values)

    try:
        if isinstance(strategy, str):
            if strategy in ("importance", "reverse"):
                order = importance_order(importance if importance is not None else estimate())
                return curve(order if strategy == "importance" else order[::-1])
            if strategy == "random":
                heads = importance_order(saved)  # every head, in graph order
                rng = np.random.default_rng(seed)
                curves = np.stack([curve([heads[i] for i in rng.permutation(len(heads))]) for _ in range(num_random)])
                return curves if return_all else curves.mean(0)
            if strategy == "iterative":
                return _iterative_curve(model, eval_fn, fractions, estimate, gt)
            raise ValueError(f"strategy={strategy!r}: expected 'importance', 'reverse', 'random', 'iterative' or a list of (layer, head)")
        return curve(list(strategy))
    finally:
        set_head_mask(model, saved, gate_type=gt)


def _iterative_curve(model, eval_fn, fractions, estimate, gate_type) -> np.ndarray:
    """Prune greedily: at each fraction, re-score the surviving heads and drop the weakest.

    Each re-estimate is normalised per layer over that layer's *surviving* heads only: a pruned
    head's gradient (the effect of putting it back) can be large, and counting it would shrink
    its layer's survivors until the layer is emptied.
    """
    if fractions != sorted(fractions):
        raise ValueError(f"fractions {fractions} must be sorted ascending for strategy='iterative'")
    set_head_mask(model, {n: jnp.ones_like(v) for n, v in head_gates(model, gate_type=gate_type).items()},
                  gate_type=gate_type)
    total = sum(int(np.size(v)) for v in head_gates(model, gate_type=gate_type).values())
    pruned: list[Head] = []
    values = []
    for f in fractions:
        k = int(round(f * total))
        if k > len(pruned):
            alive = _masks_for(model, pruned, gate_type)
            raw = estimate(normalize=False)
            scores = {}
            for name, v in raw.items():
                v = np.asarray(v, np.float64).reshape(-1) * alive[name].reshape(-1)
                norm = np.sqrt((v**2).sum())
                scores[name] = np.where(alive[name].reshape(-1) > 0, v / norm if norm > 0 else v, np.inf)
            order = [h for h in importance_order(scores) if h not in pruned]
            pruned += order[: k - len(pruned)]
            set_head_mask(model, _masks_for(model, pruned, gate_type), gate_type=gate_type)
        values.append(float(eval_fn(model)))
    return np.asarray(values)


def jitted_metric(model, metric_fn: Callable, batch) -> Callable:
    """model -> float(metric_fn(model, batch)), jitted once; gates are state, so pruning never recompiles.

    Args:
      model: the NNX model (its graph is fixed here; its state is read at each call).
      metric_fn: (model, batch) -> scalar, e.g. accuracy on a held-out batch.
      batch: the batch it is evaluated on.

    Returns:
      A function model -> float, to pass as `eval_fn` to `pruning_curve`.
    """
    graphdef, _ = nnx.split(model)
    run = jax.jit(lambda state, batch: metric_fn(nnx.merge(graphdef, state), batch))
    return lambda m: float(run(nnx.state(m), batch))

def compare_pruning_orders(model, eval_fn: Callable, loss_fn: Callable, batches, *, num_random: int = 5,
                           seed: int = 0, gate_type=None) -> dict:
    """Pruning curves of the four orders Michel et al. (2019) compare, one head at a time.

    Orders: "importance, one-shot" (least important first, importance estimated once),
    "importance, iterative" (re-estimated after every removal), "reverse (most
    important first)" and "random order" (`num_random` orders, all returned).

    Args:
      model, eval_fn, loss_fn, batches, gate_type: as in `pruning_curve` (loss_fn
        per example, batches a list).
      num_random, seed: the random orders.

    Returns:
      {"fractions": (H+1,) 0, 1/H, ..., 1 for H heads, "importance": the one-shot
      `head_importance`, "curves": {order: (H+1,) or (num_random, H+1) for random}}.
    """
    importance = head_importance(model, loss_fn, batches, gate_type=gate_type)
    n_heads = sum(int(np.size(v)) for v in importance.values())
    fractions = np.arange(n_heads + 1) / n_heads
    common = dict(gate_type=gate_type)
    curves = {
        "importance, one-shot": pruning_curve(model, eval_fn, "importance", fractions, importance=importance, **common),
        "importance, iterative": pruning_curve(model, eval_fn, "iterative", fractions, loss_fn=loss_fn,
                                               batches=batches, **common),
        "reverse (most important first)": pruning_curve(model, eval_fn, "reverse", fractions, importance=importance,
                                                        **common),
        "random order": pruning_curve(model, eval_fn, "random", fractions, num_random=num_random, seed=seed,
                                      return_all=True, **common),
    }
    return {"fractions": fractions, "importance": importance, "curves": curves}

def pruning_summary(fractions, curve, *, full: float | None = None, tol: float = 0.02, at: float = 0.5) -> dict:
    """Three numbers that summarise a pruning curve (Michel et al. 2019's accuracy vs heads pruned).

    Math: AUC = trapezoid area under metric(fraction) (over [0, 1] it is on the metric's
    scale); the value at the fraction nearest `at`; and the *plateau*: the largest
    fraction pruned up to which the metric stays >= full - tol at every step.

    Args:
      fractions: (K,) ascending fractions of heads pruned, from 0.
      curve: (K,) metric per fraction, or (runs, K) (e.g. random orders: their mean is used).
      full: the unpruned metric (default: the curve's value at fraction 0).
      tol: how far below `full` still counts as "no loss". at: where to read the curve.

    Returns:
      {"AUC": float, "acc @{at}": float (e.g. "acc @50%"), "plateau": float}.
    """
    fr = np.asarray(fractions, np.float64)
    y = np.asarray(curve, np.float64)
    y = y.mean(0) if y.ndim == 2 else y
    if fr.ndim != 1 or y.shape != fr.shape or fr.size < 2:
        raise ValueError(f"curve has shape {np.shape(curve)} and fractions {fr.shape}: expected (K,) or (runs, K) "
                         "with K >= 2 fractions")
    if np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must be strictly ascending, got {fr.tolist()}")
    full = float(y[0]) if full is None else float(full)
    ok = y >= full - tol
    first_failure = len(ok) if ok.all() else int(np.argmin(ok))
    return {"AUC": float(np.sum((y[1:] + y[:-1]) * np.diff(fr)) / 2),
            f"acc @{at:.0%}": float(y[int(np.argmin(np.abs(fr - at)))]),
            "plateau": float(fr[max(first_failure - 1, 0)])}
