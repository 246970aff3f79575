"""Reference for Exercise 3 (exercises/03_masks.py): causal and padding masks."""

import numpy as np


def causal_mask(T, S=None):
    S = T if S is None else S
    query_pos = np.arange(T)[:, None] + (S - T)  # (T, 1): the queries are the last T positions
    key_pos = np.arange(S)[None, :]  # (1, S)
    return (key_pos <= query_pos)[None, None]  # (1, 1, T, S)


def padding_mask(lengths, S):
    lengths = np.asarray(lengths)
    valid = np.arange(S)[None, :] < lengths[:, None]  # (B, S)
    return valid[:, None, None, :]  # (B, 1, 1, S)
