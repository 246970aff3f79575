"""Reference for Exercise 14 (exercises/14_patches.py): ViT patch embedding."""

import numpy as np


def patchify(images, patch_size):
    x = np.asarray(images)
    B, Hi, Wi, C = x.shape
    p = patch_size
    if Hi % p or Wi % p:
        raise ValueError(f"image size {Hi}x{Wi} is not divisible by patch_size={p}")
    x = x.reshape(B, Hi // p, p, Wi // p, p, C)  # (B, rows, p, cols, p, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, rows, cols, p, p, C)
    return x.reshape(B, (Hi // p) * (Wi // p), p * p * C)  # (B, P, p*p*C), row-major patches


def patch_embed(images, weight, bias, patch_size):
    patches = patchify(np.asarray(images, np.float64), patch_size)  # (B, P, p*p*C)
    return patches @ np.asarray(weight, np.float64) + np.asarray(bias, np.float64)  # (B, P, D)
