"""Exercise 14 — ViT patch embedding.                       Lesson: vit-attention

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words". A Vision Transformer
cuts the image into non-overlapping p x p patches, flattens each patch into a
vector and projects it linearly: the patches are its tokens.

Conventions (the grader checks them exactly):
  - images are (B, height, width, C), channels last;
  - patches are numbered row by row (row-major): patch (r, c) of a grid with
    `cols` patches per row has index r * cols + c;
  - a patch is flattened in the image's own order (pixel row, pixel column,
    channel), i.e. patch[(py * p + px) * C + ch] = image[r*p + py, c*p + px, ch].

Use numpy or jax.numpy (reshape and transpose are all you need).
"""

import numpy as np


def patchify(images, patch_size):
    """Cut images into flattened patches.

    Args:
      images: (B, Hi, Wi, C).
      patch_size: p; Hi and Wi must be multiples of p.

    Returns:
      (B, P, p*p*C) with P = (Hi/p) * (Wi/p).

    Raises:
      ValueError: if Hi or Wi is not a multiple of p.
    """
    raise NotImplementedError("Exercise 14: write patchify")


def patch_embed(images, weight, bias, patch_size):
    """Patch embedding: patchify, then a linear map.

    Args:
      images: (B, Hi, Wi, C).
      weight: (p*p*C, D).
      bias: (D,).
      patch_size: p.

    Returns:
      (B, P, D) = patchify(images) @ weight + bias.
    """
    raise NotImplementedError("Exercise 14: write patch_embed")
