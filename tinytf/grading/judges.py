"""Custom verdicts for checks whose answer is not one array (the student side has these too).

A check names its judge (`Check(judge="matching")`); the default judge compares
arrays with tolerances (`core.default_judge`). A judge is
`(inputs, expected, got) -> message or None`; `same(a, b)` says whether two answers
are the same one, used to recognise a classic mistake in a student's output.
"""

from __future__ import annotations

import numpy as np


def optimal_cost(cost: np.ndarray) -> float:
    """The minimum total cost of a one-to-one matching (scipy's Hungarian solver; grader side only)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def judge_matching(inputs, expected, got) -> str | None:
    """A matching passes when it is one-to-one, complete and of minimal total cost (ties broken any way)."""
    cost = np.asarray(inputs["cost"], np.float64)
    Q, G = cost.shape
    n = min(Q, G)
    if len(got) != 2:
        return f"expected a tuple (query_index, target_index), got {len(got)} value(s)"
    rows, cols = got
    for name, idx, size in (("query_index", rows, Q), ("target_index", cols, G)):
        if idx.shape != (n,):
            return f"{name}: expected shape ({n},) (one pair per target when Q >= G), got {tuple(idx.shape)}"
        if idx.dtype.kind not in "iu":
            return f"{name}: expected integer indices, got dtype {idx.dtype}"
        if idx.min() < 0 or idx.max() >= size:
            return f"{name}: indices must lie in 0..{size - 1}, got {idx.min()}..{idx.max()}"
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            return f"{name}: {values[counts > 1][0]} is used {counts.max()} times; a matching is one-to-one"
    total, best = float(cost[rows, cols].sum()), optimal_cost(cost)
    if total > best + 1e-5 * (1 + abs(best)):
        pairs = ", ".join(f"({q}, {g})" for q, g in sorted(zip(rows.tolist(), cols.tolist())))
        return f"expected the minimum total cost {best:.4f}, got {total:.4f} from the pairs {pairs}"
    return None


def same_pairs(a, b) -> bool:
    """Two matchings are the same set of (query, target) pairs."""
    if len(a) != 2 or len(b) != 2 or a[0].shape != b[0].shape or a[1].shape != b[1].shape:
        return False
    return sorted(zip(a[0].tolist(), a[1].tolist())) == sorted(zip(b[0].tolist(), b[1].tolist()))


# name -> (judge, same); "same" None means core.outputs_equal
JUDGES = {"matching": (judge_matching, same_pairs)}
