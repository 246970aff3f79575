"""Exercise 13 — optimal one-to-one matching for DETR.     Lesson: detr-queries

DETR predicts a fixed set of Q objects and learns by matching them one-to-one to
the G ground-truth objects (Carion et al. 2020, section 3.1): among all ways of
giving each target its own query, take the one with the smallest total cost,
where cost[q, g] says how bad query q is as a prediction of target g. The
Hungarian algorithm (Kuhn 1955) finds it in polynomial time; for the small sizes
here a brute force over all assignments is fine too. The grader checks that your
matching is one-to-one and that its total cost is the minimum (ties may be broken
any way).

Use numpy or jax.numpy; scipy.optimize.linear_sum_assignment is not available to
the grader's child process (it would be the whole exercise).
"""

import numpy as np


def hungarian_match(cost):
    """Minimum-cost one-to-one matching between queries (rows) and targets (columns).

    Args:
      cost: (Q, G) float cost matrix.

    Returns:
      (query_index, target_index): two int arrays of length min(Q, G), no index
      repeated in either, such that sum(cost[query_index, target_index]) is
      minimal. With Q >= G every target is matched.
    """
    raise NotImplementedError("Exercise 13: write hungarian_match")
