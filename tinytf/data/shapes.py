"""Synthetic images drawn with jnp: shapes for classification and detection, watermarks, bars.

Everything here is drawn from signed-distance-style inequalities evaluated on the pixel grid
(pixel (row i, column j) has its centre at (j + 0.5, i + 0.5)), so it is pure JAX and runs
under ``jax.jit`` -- training images are made on the device inside the training loop.

Read in order:
1. ``render_shape_masks`` -- the five shapes as boolean masks.
2. ``shapes_classification`` -- one shape per image; label = shape class; optional clutter,
   noise and a spurious "watermark" correlated with the label (Clever Hans; Lapuschkin et
   al. 2019, Geirhos et al. 2020).
3. ``shapes_detection`` -- several shapes per image with DETR-style targets (Carion et al.
   2020): class labels, normalised (cx, cy, w, h) boxes, a validity mask.
4. ``bars_watermark`` -- the harder shortcut toy of the `spurious-attention` lesson: a
   horizontal vs vertical bar in heavy noise, plus the watermark.
5. ``feature_map_detection`` -- the DETR toy of the `detr-queries` lesson: objects as one-hot
   cells of an 8x8 feature grid, with cell boxes as targets.

Images are float32 in [0, 1], layout (B, H, W, C); configuration is keyword-only and static
(close over it with ``functools.partial`` under jit).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.checks import check_int, check_key, check_prob
from tinytf.data._compiled import compiled

#: Shape classes, in label order.
SHAPE_NAMES = ("circle", "square", "triangle", "cross", "diamond")

#: Watermark modes: no stamp; present iff label == 1 with probability ``watermark_prob``;
#: present iff label != 1 (always); present with probability 1/2 independent of the label.
WATERMARK_MODES = ("none", "correlated", "flipped", "independent")


def render_shape_masks(kind, cx, cy, radius, *, height: int, width: int) -> jax.Array:
    """Boolean masks of shapes with given class, centre and half-extent.

    Shapes: circle (radius r), axis-aligned square (half-side r), upward triangle (apex at
    cy - r, base of width 2r at cy + r), plus-shaped cross (arms of half-length r and
    half-width r/3), diamond (|dx| + |dy| <= r). Every shape lies within the square
    [cx - r, cx + r] x [cy - r, cy + r] (pixel units).

    Args:
      kind: int array (...) of classes, indices into ``SHAPE_NAMES``.
      cx, cy: float arrays (...) of centres in pixels (x = column, y = row).
      radius: float array (...) of half-extents in pixels.
      height, width: image size H, W.

    Returns:
      bool array (..., H, W), True inside the shape.
    """
    lead = jnp.broadcast_shapes(*(jnp.shape(a) for a in (kind, cx, cy, radius)))  # the "..." dims
    kind, cx, cy, radius = (jnp.broadcast_to(jnp.asarray(a), lead)[..., None, None] for a in (kind, cx, cy, radius))
    ones = (1,) * len(lead)
    px = (jnp.arange(width, dtype=jnp.float32) + 0.5).reshape(*ones, 1, width)  # pixel centres, (..., 1, W)
    py = (jnp.arange(height, dtype=jnp.float32) + 0.5).reshape(*ones, height, 1)  # (..., H, 1)
    dx, dy, r = px - cx, py - cy, radius  # (..., 1, W), (..., H, 1), (..., 1, 1)
    adx, ady = jnp.abs(dx), jnp.abs(dy)
    masks = [
        dx**2 + dy**2 <= r**2,  # circle
        jnp.maximum(adx, ady) <= r,  # square
        (dy <= r) & (adx <= (dy + r) / 2),  # triangle (also implies dy >= -r)
        ((adx <= r) & (ady <= r / 3)) | ((ady <= r) & (adx <= r / 3)),  # cross
        adx + ady <= r,  # diamond
    ]
    out = jnp.zeros((*lead, height, width), bool)
    for k, m in enumerate(masks):
        out = jnp.where(kind == k, m, out)  # kind: (..., 1, 1)
    return out


def masks_to_boxes(masks: jax.Array) -> jax.Array:
    """Tight normalised (cx, cy, w, h) boxes of boolean masks; an empty mask gives zeros.

    The box spans pixel edges: a mask occupying columns j1..j2 gives x1 = j1, x2 = j2 + 1.

    Args:
      masks: bool (..., H, W).

    Returns:
      float32 (..., 4) in [0, 1].
    """
    H, W = masks.shape[-2:]
    cols, rows = masks.any(axis=-2), masks.any(axis=-1)  # (..., W), (..., H)
    x1 = jnp.argmax(cols, axis=-1)
    x2 = W - jnp.argmax(cols[..., ::-1], axis=-1)
    y1 = jnp.argmax(rows, axis=-1)
    y2 = H - jnp.argmax(rows[..., ::-1], axis=-1)
    boxes = jnp.stack([(x1 + x2) / (2 * W), (y1 + y2) / (2 * H), (x2 - x1) / W, (y2 - y1) / H], axis=-1)
    return jnp.where(cols.any(axis=-1)[..., None], boxes, 0.0).astype(jnp.float32)


def boxes_to_pixels(boxes, image_size) -> jax.Array:
    """Normalised (cx, cy, w, h) boxes to pixel corners (x1, y1, x2, y2).

    Pixel edges: column j spans [j, j + 1), so a box covers columns x1 <= j < x2 (for boxes
    made here the corners are whole numbers, up to float rounding).

    Args:
      boxes: (..., 4) normalised (cx, cy, w, h), DETR convention.
      image_size: S for square images, or (H, W).

    Returns:
      float32 (..., 4) pixel (x1, y1, x2, y2).
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have a last axis of 4 (cx, cy, w, h), got shape {boxes.shape}")
    H, W = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return jnp.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], axis=-1)


# ----------------------------------------------------------------------------------------------
# Sampling helpers
# ----------------------------------------------------------------------------------------------


def _check_sizes(image_size: int, min_size: float, max_size: float) -> tuple[float, float]:
    min_size, max_size = float(min_size), float(max_size)
    if not 0 < min_size <= max_size <= 0.5:
        raise ValueError(f"need 0 < min_size <= max_size <= 0.5 (half-extent / image side), got {min_size}, {max_size}")
    if min_size * image_size < 1.5:
        raise ValueError(
            f"min_size={min_size} is {min_size * image_size:.2f} px at image_size={image_size}: expected >= 1.5 px"
        )
    return min_size, max_size


def _colors(key, shape: tuple[int, ...], channels: int) -> jax.Array:
    """Random bright colours (..., C): RGB channels in [0.3, 1], grey levels in [0.5, 1]."""
    low = 0.3 if channels == 3 else 0.5
    return jax.random.uniform(key, (*shape, channels), minval=low, maxval=1.0)


def _uniform_centres(key, radius: jax.Array, image_size: int, keep_out: int) -> tuple[jax.Array, jax.Array]:
    """Centres keeping [c - r, c + r] inside the image and (if keep_out) off the top-left patch.

    A square of side ``keep_out`` in the top-left corner stays free: a shape that would touch
    it is pushed right or down (at random) just past it.
    """
    k_xy, k_dir = jax.random.split(key)
    u = jax.random.uniform(k_xy, (2, *radius.shape))
    cx = radius + u[0] * (image_size - 2 * radius)
    cy = radius + u[1] * (image_size - 2 * radius)
    if keep_out:
        clash = (cx - radius < keep_out) & (cy - radius < keep_out)
        right = jax.random.bernoulli(k_dir, 0.5, radius.shape)
        cx = jnp.where(clash & right, jnp.maximum(cx, keep_out + radius), cx)
        cy = jnp.where(clash & ~right, jnp.maximum(cy, keep_out + radius), cy)
    return cx, cy


def _grid_centres(key, radius: jax.Array, image_size: int) -> tuple[jax.Array, jax.Array]:
    """Centres in distinct cells of a g x g grid (g = ceil(sqrt(M))), so shapes never overlap."""
    B, M = radius.shape
    g = math.ceil(math.sqrt(M))
    cell = image_size / g
    k_cell, k_xy = jax.random.split(key)
    cells = jnp.argsort(jax.random.uniform(k_cell, (B, g * g)), axis=1)[:, :M]  # (B, M) distinct
    u = jax.random.uniform(k_xy, (2, B, M))
    cx = (cells % g) * cell + radius + u[0] * (cell - 2 * radius)
    cy = (cells // g) * cell + radius + u[1] * (cell - 2 * radius)
    return cx, cy


def _paint(canvas: jax.Array, masks: jax.Array, colors: jax.Array, priority: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Painter's algorithm in one step: each pixel takes the colour of its highest-priority shape.

    Args:
      canvas: (B, H, W, C) background.
      masks: (B, K, H, W) bool shapes; colors: (B, K, C); priority: (B, K) ints, higher on top.

    Returns:
      the painted canvas (B, H, W, C) and ``owner`` (B, H, W): index of the visible shape, or -1.
    """
    B, K, H, W = masks.shape
    score = jnp.where(masks, priority[:, :, None, None], -1)  # (B, K, H, W)
    owner = jnp.argmax(score, axis=1)  # (B, H, W)
    painted = score.max(axis=1) >= 0
    color = jnp.take_along_axis(colors, owner.reshape(B, H * W, 1), axis=1).reshape(B, H, W, -1)
    return jnp.where(painted[..., None], color, canvas), jnp.where(painted, owner, -1)


def _clutter(key, canvas: jax.Array, count: int, keep_out: int) -> jax.Array:
    """Paint ``count`` random 1-2 pixel specks of random colour on (B, H, W, C) ``canvas``."""
    B, S, _, C = canvas.shape
    k_r, k_xy, k_c = jax.random.split(key, 3)
    r = jax.random.uniform(k_r, (B, count), minval=0.5, maxval=1.0)
    cx, cy = _uniform_centres(k_xy, r, S, keep_out)
    specks = render_shape_masks(jnp.ones((B, count), jnp.int32), cx, cy, r, height=S, width=S)  # squares
    order = jnp.broadcast_to(jnp.arange(count), (B, count))
    return _paint(canvas, specks, _colors(k_c, (B, count), C), order)[0]


def _add_noise(key, images: jax.Array, noise: float) -> jax.Array:
    if noise > 0:
        images = images + noise * jax.random.normal(key, images.shape)
    return jnp.clip(images, 0.0, 1.0).astype(jnp.float32)


def _watermark_flags(key, labels: jax.Array, mode: str, prob: float) -> jax.Array:
    """(B,) bool: whether each image carries the watermark, given the mode (see WATERMARK_MODES)."""
    positive = labels == 1
    if mode == "none":
        return jnp.zeros_like(positive)
    if mode == "correlated":
        agree = jax.random.bernoulli(key, prob, labels.shape)
        return jnp.where(agree, positive, ~positive)
    if mode == "flipped":
        return ~positive
    return jax.random.bernoulli(key, 0.5, labels.shape)  # independent


def _stamp_watermark(images: jax.Array, flags: jax.Array, size: int) -> jax.Array:
    """Overwrite the top-left size x size patch of flagged images with a 0/1 checkerboard."""
    i = np.arange(size)
    board = jnp.asarray(((i[:, None] + i[None, :]) % 2 == 0).astype(np.float32))  # (s, s), 1 at (0, 0)
    patch = jnp.where(flags[:, None, None, None], board[None, :, :, None], images[:, :size, :size, :])
    return images.at[:, :size, :size, :].set(patch)


def _check_watermark(watermark: str, watermark_size: int, watermark_prob: float, image_size: int) -> None:
    if watermark not in WATERMARK_MODES:
        raise ValueError(f"watermark must be one of {WATERMARK_MODES}, got {watermark!r}")
    check_prob("watermark_prob", watermark_prob)
    check_int("watermark_size", watermark_size, low=0, high=image_size // 2)
    if watermark != "none" and watermark_size == 0:
        raise ValueError(f"watermark={watermark!r} needs watermark_size > 0 (the patch side in pixels)")


# ----------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------


@compiled
def shapes_classification(key, *, batch_size: int, image_size: int = 32, channels: int = 3, num_classes: int = 4,
                          min_size: float = 0.2, max_size: float = 0.35, noise: float = 0.0, clutter: int = 0,
                          background: float = 0.0, watermark: str = "none", watermark_prob: float = 0.98,
                          watermark_size: int = 0) -> dict[str, jax.Array]:
    """One random shape per image; the label is its class (``SHAPE_NAMES[:num_classes]``).

    Each shape gets a random colour, a half-extent uniform in [min_size, max_size] x
    image_size and a uniform position fully inside the image. ``clutter`` adds small random
    specks under the shape; ``noise`` adds Gaussian noise of that standard deviation (then
    clips to [0, 1]).

    The spurious watermark (Clever Hans; Lapuschkin et al. 2019): with ``watermark_size`` = s > 0
    the top-left s x s patch is kept free of shapes and clutter (in every mode, so that all
    evaluation sets share one shape distribution), and a 0/1 checkerboard is stamped there:
    ``"correlated"`` -- present iff label == 1, with probability ``watermark_prob`` (else
    present iff label != 1); ``"flipped"`` -- present iff label != 1, always (the flipped
    test set); ``"independent"`` -- present with probability 1/2 whatever the label (the
    decorrelating augmentation); ``"none"`` -- never. Use s = the ViT patch size so the mark
    fills exactly one patch.

    Args:
      key: a JAX random key.
      batch_size: B.
      image_size: S (square images), e.g. 16, 32 or 64.
      channels: 1 (grey) or 3 (RGB).
      num_classes: how many of ``SHAPE_NAMES`` to use (2..5).
      min_size, max_size: range of the half-extent as a fraction of S.
      noise: Gaussian noise standard deviation.
      clutter: number of distractor specks per image.
      background: background grey level in [0, 1].
      watermark: one of ``WATERMARK_MODES``.
      watermark_prob: P(watermark agrees with label == 1) in "correlated" mode.
      watermark_size: s, side of the watermark patch in pixels (0 = no patch reserved).

    Returns:
      dict with ``images (B, S, S, C) float32``, ``labels (B,) int32``, ``masks (B, S, S)
      bool`` (the shape's pixels), ``boxes (B, 4) float32`` (tight normalised cx, cy, w, h)
      and ``watermark (B,) bool``.
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    image_size = check_int("image_size", image_size, low=8)
    channels = check_int("channels", channels, low=1, high=3)
    if channels == 2:
        raise ValueError("channels must be 1 (grey) or 3 (RGB), got 2")
    num_classes = check_int("num_classes", num_classes, low=2, high=len(SHAPE_NAMES))
    min_size, max_size = _check_sizes(image_size, min_size, max_size)
    clutter = check_int("clutter", clutter, low=0)
    check_prob("background", background)
    _check_watermark(watermark, watermark_size, watermark_prob, image_size)
    if watermark_size and watermark_size + 2 * max_size * image_size > image_size:
        raise ValueError(
            f"a shape of half-extent max_size={max_size} ({max_size * image_size:.1f} px) cannot avoid a "
            f"{watermark_size} px watermark patch in a {image_size} px image: lower max_size or watermark_size"
        )

    B, S = batch_size, image_size
    ks = jax.random.split(key, 8)
    labels = jax.random.randint(ks[0], (B,), 0, num_classes, dtype=jnp.int32)
    radius = jax.random.uniform(ks[1], (B,), minval=min_size * S, maxval=max_size * S)
    cx, cy = _uniform_centres(ks[2], radius, S, watermark_size)
    masks = render_shape_masks(labels, cx, cy, radius, height=S, width=S)  # (B, S, S)
    canvas = jnp.full((B, S, S, channels), background, jnp.float32)
    if clutter:
        canvas = _clutter(ks[3], canvas, clutter, watermark_size)
    colors = _colors(ks[4], (B,), channels)  # (B, C)
    canvas = jnp.where(masks[..., None], colors[:, None, None, :], canvas)
    flags = _watermark_flags(ks[5], labels, watermark, watermark_prob)
    if watermark_size:
        canvas = _stamp_watermark(canvas, flags, watermark_size)
    images = _add_noise(ks[6], canvas, noise)
    return {"images": images, "labels": labels, "masks": masks, "boxes": masks_to_boxes(masks), "watermark": flags}


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


@compiled
def shapes_detection(key, *, batch_size: int, image_size: int = 64, max_objects: int = 5, min_objects: int = 1,
                     num_classes: int = 4, min_size: float = 0.06, max_size: float = 0.16, overlap: bool = True,
                     noise: float = 0.0, clutter: int = 0, background: float = 0.0) -> dict[str, jax.Array]:
    """Several coloured shapes per image with DETR-style targets (Carion et al. 2020).

    Each image holds n ~ U[min_objects, max_objects] shapes of random class, colour, size
    and position, padded to M = max_objects slots (the first n are real). With
    ``overlap=True`` positions are independent, so shapes may overlap; they are painted from
    the largest to the smallest, so a small shape is never hidden behind a larger one
    (``visible`` reports how much of each survives). With ``overlap=False`` each shape sits
    in its own cell of a ceil(sqrt(M))^2 grid (needs max_size <= 1 / (2 * grid side)).
    Boxes are tight around each shape's full mask (amodal) and lie inside the image.

    Args:
      key: a JAX random key.
      batch_size: B.
      image_size: S (default 64).
      max_objects: M.
      min_objects: smallest n (>= 0).
      num_classes: C, how many of ``SHAPE_NAMES`` to use (1..5).
      min_size, max_size: half-extent range as a fraction of S.
      overlap: allow overlapping shapes (else one per grid cell).
      noise: Gaussian noise standard deviation; clutter: distractor specks per image.
      background: background grey level.

    Returns:
      dict with ``images (B, S, S, 3) float32``, ``labels (B, M) int32`` (class in [0, C),
      -1 for padding), ``boxes (B, M, 4) float32`` (normalised cx, cy, w, h; zeros for
      padding), ``valid (B, M) bool``, ``num_objects (B,) int32``, ``masks (B, M, S, S) bool``
      (each object's full shape) and ``visible (B, M) float32`` (fraction of its pixels not
      covered by later shapes).
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    image_size = check_int("image_size", image_size, low=8)
    max_objects = check_int("max_objects", max_objects, low=1)
    min_objects = check_int("min_objects", min_objects, low=0, high=max_objects)
    num_classes = check_int("num_classes", num_classes, low=1, high=len(SHAPE_NAMES))
    min_size, max_size = _check_sizes(image_size, min_size, max_size)
    clutter = check_int("clutter", clutter, low=0)
    check_prob("background", background)
    grid = math.ceil(math.sqrt(max_objects))
    if not overlap and max_size > 1 / (2 * grid):
        raise ValueError(
            f"overlap=False puts each of max_objects={max_objects} shapes in its own cell of a {grid}x{grid} grid: "
            f"needs max_size <= {1 / (2 * grid):.4f}, got {max_size}"
        )

    B, M, S = batch_size, max_objects, image_size
    ks = jax.random.split(key, 8)
    num_objects = jax.random.randint(ks[0], (B,), min_objects, max_objects + 1, dtype=jnp.int32)
    valid = jnp.arange(M)[None, :] < num_objects[:, None]  # (B, M)
    kinds = jax.random.randint(ks[1], (B, M), 0, num_classes, dtype=jnp.int32)
    radius = jax.random.uniform(ks[2], (B, M), minval=min_size * S, maxval=max_size * S)
    cx, cy = _grid_centres(ks[3], radius, S) if not overlap else _uniform_centres(ks[3], radius, S, 0)
    masks = render_shape_masks(kinds, cx, cy, radius, height=S, width=S) & valid[..., None, None]  # (B, M, S, S)

    canvas = jnp.full((B, S, S, 3), background, jnp.float32)
    if clutter:
        canvas = _clutter(ks[4], canvas, clutter, 0)
    colors = _colors(ks[5], (B, M), 3)  # (B, M, 3)
    # Paint the largest shape first (lowest priority): priority = how many shapes are larger.
    priority = (radius[:, None, :] > radius[:, :, None]).sum(axis=-1)  # (B, M)
    canvas, owner = _paint(canvas, masks, colors, priority)
    shown = (owner[:, None] == jnp.arange(M)[None, :, None, None]).sum(axis=(2, 3))  # (B, M)
    area = masks.sum(axis=(2, 3))
    visible = jnp.where(area > 0, shown / jnp.maximum(area, 1), 0.0).astype(jnp.float32)
    return {
        "images": _add_noise(ks[6], canvas, noise),
        "labels": jnp.where(valid, kinds, -1),
        "boxes": masks_to_boxes(masks),
        "valid": valid,
        "num_objects": num_objects,
        "masks": masks,
        "visible": visible,
    }


# ----------------------------------------------------------------------------------------------
# Bars with a watermark (the spurious-attention lesson)
# ----------------------------------------------------------------------------------------------


@compiled
def bars_watermark(key, *, batch_size: int, image_size: int = 16, bar_length: int = 5, noise: float = 0.35,
                   watermark: str = "correlated", watermark_prob: float = 0.98, watermark_size: int = 4
                   ) -> dict[str, jax.Array]:
    """Grey images of a horizontal (label 0) or vertical (label 1) bar, plus a spurious watermark.

    A shortcut-learning toy (Geirhos et al. 2020): a 1-pixel-wide bar of ``bar_length`` pixels
    (value 1 on a 0 background) at a uniformly random position that never touches the
    top-left ``watermark_size`` patch, Gaussian noise sigma = ``noise``, clipped to [0, 1].
    The watermark (a 0/1 checkerboard in that patch) follows ``watermark`` as in
    ``shapes_classification``: "correlated" (present iff label == 1 with probability
    ``watermark_prob``), "flipped" (present iff label == 0), "independent", "none". The bar
    is harder to see than the watermark, so a ViT trained on "correlated" data learns the
    watermark (Lapuschkin et al. 2019; Geirhos et al. 2020).

    Args:
      key: a JAX random key.
      batch_size: B.
      image_size: S (default 16).
      bar_length: bar length in pixels.
      noise: Gaussian noise standard deviation.
      watermark: one of ``WATERMARK_MODES``.
      watermark_prob: P(watermark agrees with label == 1) in "correlated" mode.
      watermark_size: side of the watermark patch (also the keep-out zone; 0 = none).

    Returns:
      dict with ``images (B, S, S, 1) float32``, ``labels (B,) int32``, ``masks (B, S, S)
      bool`` (the bar's pixels) and ``watermark (B,) bool``.
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    image_size = check_int("image_size", image_size, low=4)
    bar_length = check_int("bar_length", bar_length, low=1, high=image_size)
    _check_watermark(watermark, watermark_size, watermark_prob, image_size)

    B, S, L, s = batch_size, image_size, bar_length, watermark_size
    # A horizontal bar starts at (row y, column x) and covers columns x .. x + L - 1.
    y, x = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")  # (S, S) each
    allowed = (x <= S - L) & ~((y < s) & (x < s))  # (S, S) over start positions, row-major
    logits = jnp.asarray(np.where(allowed.reshape(-1), 0.0, -np.inf), jnp.float32)  # (S*S,)
    ks = jax.random.split(key, 4)
    labels = jax.random.randint(ks[0], (B,), 0, 2, dtype=jnp.int32)
    start = jax.random.categorical(ks[1], logits, shape=(B,))  # uniform over allowed starts
    a, b = start // S, start % S  # along-bar-normal coordinate, along-bar start
    row, col = jnp.arange(S).reshape(1, S, 1), jnp.arange(S).reshape(1, 1, S)
    horizontal = (row == a[:, None, None]) & (col >= b[:, None, None]) & (col < b[:, None, None] + L)
    vertical = jnp.swapaxes(horizontal, 1, 2)  # the transposed layout; the keep-out patch is symmetric
    masks = jnp.where((labels == 1)[:, None, None], vertical, horizontal)  # (B, S, S)
    canvas = masks[..., None].astype(jnp.float32)  # (B, S, S, 1)
    flags = _watermark_flags(ks[2], labels, watermark, watermark_prob)
    if s:
        canvas = _stamp_watermark(canvas, flags, s)
    return {"images": _add_noise(ks[3], canvas, noise), "labels": labels, "masks": masks, "watermark": flags}


# ----------------------------------------------------------------------------------------------
# Synthetic feature maps for DETR (the detr-queries lesson)
# ----------------------------------------------------------------------------------------------


@compiled
def feature_map_detection(key, *, batch_size: int, grid: int = 8, max_objects: int = 3, min_objects: int = 1,
                          num_classes: int = 3, noise: float = 0.1) -> dict[str, jax.Array]:
    """What a backbone would hand DETR, without the backbone: objects as cells of a feature grid.

    Each (grid x grid) map holds n ~ U[min_objects, max_objects] objects at distinct random
    cells, of random class. A cell's feature is the one-hot code of its class, with class
    ``num_classes`` meaning "background", plus Gaussian noise: (B, g, g, num_classes + 1).
    The content of a cell says *what* is there; *where* it is can only come from positions,
    which makes this a test of DETR's decoder alone: no backbone to blame.
    Targets are DETR-style: the box of object k is its cell, (cx, cy, w, h) = ((j + 0.5)/g,
    (i + 0.5)/g, 1/g, 1/g) for row i, column j, normalised to [0, 1].

    Args:
      key: a JAX random key.
      batch_size: B.
      grid: g, the side of the map (8 = a 64x64 image after 3 stride-2 convolutions).
      max_objects: M (<= g * g), the padded number of object slots.
      min_objects: smallest n (>= 0).
      num_classes: C object classes.
      noise: standard deviation of the Gaussian noise added to every feature.

    Returns:
      dict with ``features (B, g, g, C + 1) float32``, ``labels (B, M) int32`` (class in
      [0, C), -1 for padding), ``boxes (B, M, 4) float32`` (zeros for padding), ``valid (B, M)
      bool``, ``cells (B, M) int32`` (row-major cell index i * g + j; -1 for padding) and
      ``num_objects (B,) int32``.
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    grid = check_int("grid", grid, low=1)
    max_objects = check_int("max_objects", max_objects, low=1, high=grid * grid)
    min_objects = check_int("min_objects", min_objects, low=0, high=max_objects)
    num_classes = check_int("num_classes", num_classes, low=1)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    B, M, g, C = batch_size, max_objects, grid, num_classes
    ks = jax.random.split(key, 4)
    num_objects = jax.random.randint(ks[0], (B,), min_objects, max_objects + 1, dtype=jnp.int32)
    valid = jnp.arange(M)[None, :] < num_objects[:, None]  # (B, M)
    kinds = jax.random.randint(ks[1], (B, M), 0, C, dtype=jnp.int32)
    # distinct cells: the first M of a random permutation of the g*g cells (argsort of uniforms)
    cells = jnp.argsort(jax.random.uniform(ks[2], (B, g * g)), axis=-1)[:, :M].astype(jnp.int32)  # (B, M)
    cell_class = jnp.full((B, g * g), C, jnp.int32)  # background everywhere ...
    cell_class = cell_class.at[jnp.arange(B)[:, None], jnp.where(valid, cells, g * g)].set(kinds, mode="drop")
    features = jax.nn.one_hot(cell_class, C + 1, dtype=jnp.float32).reshape(B, g, g, C + 1)
    features = features + noise * jax.random.normal(ks[3], features.shape)
    row, col = cells // g, cells % g
    boxes = jnp.stack([(col + 0.5) / g, (row + 0.5) / g, jnp.full(cells.shape, 1 / g), jnp.full(cells.shape, 1 / g)],
                      axis=-1).astype(jnp.float32)  # (B, M, 4)
    return {
        "features": features,
        "labels": jnp.where(valid, kinds, -1),
        "boxes": jnp.where(valid[..., None], boxes, 0.0),
        "valid": valid,
        "cells": jnp.where(valid, cells, -1),
        "num_objects": num_objects,
    }
