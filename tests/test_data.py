"""Tests for tinytf.data: determinism, jit, and that every label matches what was generated.

Oracles are independent numpy recomputations (recounting tokens, re-deriving the
Bigram-Backcopy rule, bounding boxes from masks, shape areas from geometry). Batches are made
once per module (each new configuration costs an XLA compile on a small CPU).
"""

import ast
import functools
import math
import pathlib
import sys

import jax
import numpy as np
import pytest

from tinytf import data

KEY0, KEY1 = jax.random.key(0), jax.random.key(1)


def _np(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


BB_TASK = data.make_bigram_backcopy_task(0)

# Every configuration the tests use: name -> (generator, static kwargs).
CONFIGS = {
    "copy": ("copy_task", dict(batch_size=5, length=7, vocab_size=11)),
    "copy_bos": ("copy_task", dict(batch_size=5, length=7, vocab_size=11, bos=True)),
    "recall": ("associative_recall", dict(batch_size=5, num_pairs=3, num_keys=7)),
    "needle": ("needle_haystack", dict(batch_size=64, max_items=64, min_items=8)),
    "needle_2048": ("needle_haystack", dict(batch_size=2, max_items=2048)),
    "bb": ("sample_bigram_backcopy", dict(batch_size=256, seq_len=32, task=BB_TASK)),
    "counting": ("counting_task", dict(batch_size=200, mask_prob=0.0)),
    "counting_masked": ("counting_task", dict(batch_size=200, mask_prob=0.1)),
    "shapes": ("shapes_classification", dict(batch_size=60, image_size=32, num_classes=5)),
    "shapes_clean": ("shapes_classification", dict(batch_size=8, image_size=16, channels=1)),
    "shapes_noisy": ("shapes_classification", dict(batch_size=8, image_size=16, channels=1, noise=0.1, clutter=4)),
    "detection": ("shapes_detection", dict(batch_size=24, image_size=64, max_objects=5, num_classes=5)),
    "detection_grid": ("shapes_detection", dict(batch_size=6, max_objects=4, min_objects=4, overlap=False)),
    "featmap": ("feature_map_detection", dict(batch_size=200, grid=8, max_objects=3, num_classes=3)),
    "featmap_clean": ("feature_map_detection", dict(batch_size=50, grid=5, max_objects=25, min_objects=25,
                                                    num_classes=2, noise=0.0)),
}
for _mode in data.WATERMARK_MODES:
    CONFIGS[f"wm_shapes_{_mode}"] = ("shapes_classification", dict(
        batch_size=400, image_size=16, channels=1, num_classes=2, watermark_size=4, watermark=_mode))
    CONFIGS[f"wm_bars_{_mode}"] = ("bars_watermark", dict(batch_size=400, watermark=_mode))


# Configurations compiled together: one XLA compile per group instead of one per configuration
# (compiling dominates this file's run time on a small CPU; within a group the shared key lets
# XLA reuse identical random draws).
GROUPS = {
    "sequences": ["copy", "copy_bos", "recall", "needle", "needle_2048", "bb", "counting", "counting_masked"],
    "images": ["shapes", "shapes_clean", "shapes_noisy", "detection", "detection_grid", "featmap", "featmap_clean"],
    "watermarks": [name for name in CONFIGS if name.startswith("wm_")],
}


@functools.cache
def _group_fn(group):
    names = GROUPS[group]

    def generate(key):
        with jax.numpy_rank_promotion("raise"):  # no silent broadcasting inside the generators
            return {n: getattr(data, CONFIGS[n][0])(key, **CONFIGS[n][1]) for n in names}

    return jax.jit(generate)


def _generate(name, key):
    group = next(g for g, names in GROUPS.items() if name in names)
    return _np(_group_fn(group)(key)[name])


@functools.cache
def _all(key_index):
    key = [KEY0, KEY1][key_index]
    return {name: b for group in GROUPS for name, b in ((n, _np(v)) for n, v in _group_fn(group)(key).items())}


def _config(name, key_index=0):
    return _all(key_index)[name]


# ---------------------------------------------------------------------------------------------
# Determinism and jit, for every generator
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["copy", "recall", "needle", "bb", "counting_masked", "shapes", "detection",
                                  "wm_bars_correlated", "featmap"])
def test_generator_is_deterministic_and_jittable(name):
    a, c = _config(name, 0), _config(name, 1)
    b = _generate(name, KEY0)  # a second call with the same key
    assert a.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], c[k]) for k in a), "a different key gave identical data"
    batch = CONFIGS[name][1]["batch_size"]
    assert all(v.shape[0] == batch for v in a.values()), {k: v.shape for k, v in a.items()}


def test_eager_equals_jit_and_legacy_keys_work():
    eager = _np(data.copy_task(KEY0, **CONFIGS["copy_bos"][1]))
    jitted = _config("copy_bos")
    for k in eager:
        np.testing.assert_array_equal(eager[k], jitted[k])
    legacy = _np(data.copy_task(jax.random.PRNGKey(3), **CONFIGS["copy_bos"][1]))
    assert legacy["tokens"].shape == (5, 15)


def test_an_eager_call_is_one_compiled_program(monkeypatch):
    """Called outside jit, a generator compiles once for its configuration (not op by op), and the
    configuration is static: a second configuration compiles a second program."""
    compiled = []
    monkeypatch.setattr(jax._src.interpreters.pxla, "_cached_compilation",
                        _spy(jax._src.interpreters.pxla._cached_compilation, compiled))
    cfg = {"batch_size": 3, "max_items": 7, "min_items": 2}  # shapes no other test uses: nothing cached in memory
    first = _np(data.needle_haystack(KEY0, **cfg))
    again = _np(data.needle_haystack(KEY1, **cfg))
    assert len(compiled) == 1, f"{len(compiled)} compilations for two calls of one configuration"
    data.needle_haystack(KEY0, **{**cfg, "max_items": 8})
    assert len(compiled) == 2
    reference = _np(jax.jit(functools.partial(data.needle_haystack.__wrapped__, **cfg))(KEY0))
    for k in first:
        np.testing.assert_array_equal(first[k], reference[k], err_msg=k)
    assert any(not np.array_equal(first[k], again[k]) for k in first)


def _spy(fn, calls):
    def spy(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    return spy


def test_generators_run_inside_lax_scan():
    gen = functools.partial(data.copy_task, **CONFIGS["copy"][1])

    def body(carry, key):
        tokens = gen(key)["tokens"]
        return carry + tokens.sum(), tokens

    keys = jax.numpy.stack([KEY0, KEY1])
    total, tokens = jax.jit(lambda ks: jax.lax.scan(body, 0, ks))(keys)
    for i in range(2):
        np.testing.assert_array_equal(tokens[i], _config("copy", i)["tokens"])
    assert int(total) == int(np.asarray(tokens).sum())


# ---------------------------------------------------------------------------------------------
# Sequence tasks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bos", [False, True])
def test_copy_task_repeats_and_masks_the_second_half(bos):
    L, V = 7, 11
    b = _config("copy_bos" if bos else "copy")
    tokens, targets, mask = b["tokens"], b["targets"], b["loss_mask"]
    off = int(bos)
    assert tokens.shape == (5, 2 * L + off) and tokens.dtype == np.int32
    if bos:
        assert (tokens[:, 0] == V).all()
    np.testing.assert_array_equal(tokens[:, off:off + L], tokens[:, off + L:])
    assert tokens[:, off:].max() < V
    np.testing.assert_array_equal(targets[:, :-1], tokens[:, 1:])
    assert mask.sum(axis=1).tolist() == [L] * 5
    # the scored targets are exactly the tokens of the second half
    np.testing.assert_array_equal(targets[mask].reshape(5, L), tokens[:, off + L:])


def test_copy_task_distinct_first_half():
    b = _np(data.copy_task(KEY0, batch_size=6, length=9, vocab_size=9, distinct=True))
    for row in b["tokens"][:, :9]:
        assert sorted(row.tolist()) == list(range(9))


def test_associative_recall_answer_is_the_queried_value():
    K, P = 7, 3
    b = _config("recall")
    tokens = b["tokens"]
    assert tokens.shape == (5, 2 * P + 2)
    for row, q, a, i in zip(tokens, b["query"], b["answer"], b["pair_index"], strict=True):
        keys, values = row[0:2 * P:2], row[1:2 * P:2]
        assert len(set(keys.tolist())) == P and keys.max() < K and values.min() >= K
        assert row[-2] == q and row[-1] == a
        (where,) = np.flatnonzero(keys == q)  # exactly one pair has the query key
        assert where == i and values[where] == a
    assert b["loss_mask"].sum() == 5 and b["loss_mask"][:, -2].all()
    np.testing.assert_array_equal(b["targets"][:, -2], b["answer"])


@pytest.fixture(scope="module")
def needle():
    return _config("needle")


def test_needle_exactly_one_match_and_target(needle):
    b = needle
    keys, valid = b["item_keys"], b["valid"]
    match = (keys == b["query"][:, None, :]).all(axis=-1) & valid  # (B, M)
    assert (match.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(match.argmax(axis=1), b["needle_index"])
    np.testing.assert_array_equal(b["item_values"][np.arange(64), b["needle_index"]], b["target"])
    np.testing.assert_array_equal(b["item_key_ids"], keys[..., 0] * 8 + keys[..., 1])
    np.testing.assert_array_equal(b["query_id"], b["query"][:, 0] * 8 + b["query"][:, 1])


def test_needle_lengths_padding_and_ranges(needle):
    b = needle
    lengths = b["lengths"]
    assert lengths.min() >= 8 and lengths.max() <= 64 and len(np.unique(lengths)) > 10
    np.testing.assert_array_equal(b["valid"], np.arange(64)[None] < lengths[:, None])
    assert (b["needle_index"] < lengths).all()
    assert (b["item_keys"][~b["valid"]] == 0).all() and (b["item_values"][~b["valid"]] == 0).all()
    assert b["item_keys"].max() < 8 and b["item_values"].max() < 16 and b["target"].max() < 16


def test_needle_near_miss_and_filler_rates(needle):
    b = needle
    keys, q = b["item_keys"], b["query"][:, None, :]
    distractor = b["valid"].copy()
    distractor[np.arange(64), b["needle_index"]] = False
    shared = (keys == q).sum(axis=-1)  # sub-keys shared with the needle
    assert (shared[distractor] <= 1).all()
    np.testing.assert_array_equal(b["near_miss"], distractor & (shared == 1))
    n = distractor.sum()
    near_rate = b["near_miss"].sum() / n
    filler_rate = (b["item_values"][distractor] == 0).mean()
    # binomial standard errors with n ~ 2,000 distractors are ~0.009 and ~0.007: allow 4 sigma
    assert abs(near_rate - 0.8) < 4 * math.sqrt(0.16 / n), near_rate
    assert abs(filler_rate - 0.9) < 4 * math.sqrt(0.09 / n), filler_rate
    # near misses share a or b about equally often
    share_a = ((keys[..., 0] == q[..., 0]) & b["near_miss"]).sum() / b["near_miss"].sum()
    assert 0.4 < share_a < 0.6


def test_needle_evaluation_length_2048():
    b = _config("needle_2048")
    assert b["item_keys"].shape == (2, 2048, 2) and b["valid"].all()
    match = (b["item_keys"] == b["query"][:, None]).all(-1)
    assert (match.sum(axis=1) == 1).all()


def test_bigram_backcopy_task_matrix():
    t = BB_TASK
    assert t.transition.shape == (32, 32) and t.bos == 32 and t.num_tokens == 33
    np.testing.assert_allclose(t.transition.sum(axis=1), 1.0, atol=1e-5)
    again = data.make_bigram_backcopy_task(0)
    np.testing.assert_array_equal(t.transition, again.transition)
    assert not np.array_equal(t.transition, data.make_bigram_backcopy_task(1).transition)
    # triggers were up-weighted: their mean column mass is above the others'
    col = t.transition.mean(axis=0)
    assert col[[1, 2, 3]].mean() > col[4:].mean()


@pytest.fixture(scope="module")
def bb():
    return _config("bb")


def _numpy_bb_triggers(tokens, triggers, bos):
    """Independent re-derivation of the rule: trigger after an ordinary token => copy."""
    out = np.zeros(tokens.shape, bool)
    for b, row in enumerate(tokens):
        for t in range(1, len(row)):
            prev = row[t - 1]
            out[b, t] = row[t] in triggers and prev != bos and prev not in triggers
    return out


def test_bigram_backcopy_rule_holds_after_every_trigger(bb):
    tokens, trig = bb["tokens"], bb["trigger"]
    assert tokens.shape == (256, 32)
    assert (tokens[:, 0] == 32).all() and (tokens[:, 1:] < 32).all()
    np.testing.assert_array_equal(trig, _numpy_bb_triggers(tokens, set(BB_TASK.triggers), 32))
    b_idx, t_idx = np.nonzero(trig[:, :-1])
    assert len(b_idx) > 500
    np.testing.assert_array_equal(tokens[b_idx, t_idx + 1], tokens[b_idx, t_idx - 1])
    frac = trig[:, 1:-1].mean()
    assert 0.08 < frac < 0.25, frac  # triggers are common but not dominant
    assert bb["loss_mask"][:, :-1].all() and not bb["loss_mask"][:, -1].any()


def test_bigram_backcopy_follows_the_bigram_matrix(bb):
    tokens, trig = bb["tokens"], bb["trigger"]
    cur, nxt, active = tokens[:, 1:-1].ravel(), tokens[:, 2:].ravel(), trig[:, 1:-1].ravel()
    cur, nxt = cur[~active], nxt[~active]
    P = BB_TASK.transition
    assert (P[cur, nxt] > 0).all(), "a transition of probability zero was sampled"
    state = np.bincount(cur).argmax()  # the most visited state: compare its empirical row
    counts = np.bincount(nxt[cur == state], minlength=32)
    n = counts.sum()
    tv = 0.5 * np.abs(counts / n - P[state]).sum()
    # expected TV for n multinomial draws is <= 0.5 * sum sqrt(p(1-p)/n); allow 3x that
    bound = 1.5 * np.sqrt(P[state] * (1 - P[state]) / n).sum()
    assert n > 300 and tv < bound, (n, tv, bound)
    # true_logprob: the log-probability of each target under the process
    lp = bb["true_logprob"]
    np.testing.assert_allclose(lp[:, 0], -np.log(32), rtol=1e-6)
    assert (lp[trig & bb["loss_mask"]] == 0).all()
    b_i, t_i = np.nonzero(~trig[:, 1:-1])
    t_i = t_i + 1
    np.testing.assert_allclose(lp[b_i, t_i], np.log(P[tokens[b_i, t_i], tokens[b_i, t_i + 1]]), rtol=1e-5)


@pytest.mark.parametrize("mask_prob", [0.0, 0.1])
def test_counting_labels_match_recount(mask_prob):
    b = _config("counting_masked" if mask_prob else "counting")
    tokens = b["tokens"]
    assert tokens.shape == (200, 24) and (tokens[:, 0] == data.COUNTING_CLS).all()
    assert (tokens[:, 1:] != data.COUNTING_CLS).all() and tokens.max() < 16
    n_a, n_b = (tokens == data.COUNTING_A).sum(1), (tokens == data.COUNTING_B).sum(1)
    np.testing.assert_array_equal(b["count_a"], n_a)
    np.testing.assert_array_equal(b["count_b"], n_b)
    np.testing.assert_array_equal(b["label"], (n_a > n_b).astype(np.int32))
    np.testing.assert_array_equal(b["relevant"], (tokens == 1) | (tokens == 2))
    np.testing.assert_array_equal(b["is_a"], tokens == 1)
    assert n_a.max() <= 6 and n_b.max() <= 6
    mask_rate = (tokens[:, 1:] == data.COUNTING_MASK).mean()
    if mask_prob == 0.0:
        assert (n_a >= 1).all() and (n_b >= 1).all() and (n_a != n_b).all() and mask_rate == 0
        assert 0.35 < b["label"].mean() < 0.65  # symmetric by construction
        assert set(n_a.tolist()) == set(range(1, 7))
    else:
        assert abs(mask_rate - 0.1) < 4 * math.sqrt(0.09 / tokens[:, 1:].size), mask_rate


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------


def _template(kind, cx, cy, r, rows, cols):
    """numpy oracle: rasterise the ideal shape ``kind`` on pixel centres (rows, cols); broadcasts."""
    dx, dy = cols + 0.5 - cx, rows + 0.5 - cy
    name = data.SHAPE_NAMES[kind]
    if name == "circle":
        return dx**2 + dy**2 <= r**2
    if name == "square":
        return (abs(dx) <= r) & (abs(dy) <= r)
    if name == "triangle":  # apex up: the width grows linearly from 0 at the top to 2r at the bottom
        return (dy >= -r) & (dy <= r) & (abs(dx) <= (dy + r) / 2)
    if name == "cross":
        return ((abs(dx) <= r) & (abs(dy) <= r / 3)) | ((abs(dy) <= r) & (abs(dx) <= r / 3))
    return abs(dx) + abs(dy) <= r


def _best_iou_per_class(mask, num_classes):
    """For each class, the best IoU between ``mask`` and that ideal shape, searching sub-pixel
    centres and sizes around the mask's bounding box (brute force over a 9x9x9 grid)."""
    ys, xs = np.nonzero(mask)
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    grid = np.linspace(-0.5, 0.5, 9)
    cx = ((x1 + x2) / 2 + grid)[:, None, None, None, None]  # candidates on axes 0-2, pixels on 3-4
    cy = ((y1 + y2) / 2 + grid)[None, :, None, None, None]
    r = (max(x2 - x1, y2 - y1) / 2 + grid)[None, None, :, None, None]
    rows, cols = np.mgrid[y1 - 2:y2 + 2, x1 - 2:x2 + 2]  # a crop around the box
    crop = np.pad(mask, 2)[y1:y2 + 4, x1:x2 + 4]
    ious = []
    for k in range(num_classes):
        t = _template(k, cx, cy, r, rows, cols)
        ious.append(((t & crop).sum((-1, -2)) / (t | crop).sum((-1, -2))).max())
    return np.array(ious)


def test_render_shape_areas_match_geometry():
    r, size = 20.0, 64
    kinds = np.arange(5)
    render = jax.jit(functools.partial(data.render_shape_masks, height=size, width=size))
    masks = np.asarray(render(kinds, np.full(5, 32.3), np.full(5, 31.8), np.full(5, r)))
    area = masks.sum(axis=(1, 2))
    expected = {"circle": math.pi * r**2, "square": 4 * r**2, "triangle": 2 * r**2,
                "cross": 2 * (2 * r) * (2 * r / 3) - (2 * r / 3) ** 2, "diamond": 2 * r**2}
    for k, name in enumerate(data.SHAPE_NAMES):
        assert abs(area[k] - expected[name]) / expected[name] < 0.06, (name, area[k], expected[name])
    for m in masks:  # every shape fits the square [c - r, c + r]
        ys, xs = np.nonzero(m)
        assert xs.min() + 0.5 >= 32.3 - r and xs.max() + 0.5 <= 32.3 + r
        assert ys.min() + 0.5 >= 31.8 - r and ys.max() + 0.5 <= 31.8 + r


def _check_labels_by_template(masks, labels, num_classes):
    for m, y in zip(masks, labels, strict=True):
        ious = _best_iou_per_class(m, num_classes)
        assert ious.argmax() == y and ious[y] > 0.97, (data.SHAPE_NAMES[y], ious.round(3))


def test_shapes_classification_labels_match_content():
    b = _config("shapes")
    images, labels, masks = b["images"], b["labels"], b["masks"]
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1 and set(labels.tolist()) == set(range(5))
    # with no noise/clutter the foreground is exactly the mask, in a single colour
    np.testing.assert_array_equal((images > 0).any(-1), masks)
    for img, m in zip(images, masks, strict=True):
        assert len(np.unique(img[m], axis=0)) == 1
    _check_labels_by_template(masks, labels, 5)
    px = np.asarray(data.boxes_to_pixels(b["boxes"], 32))
    for m, box in zip(masks, px, strict=True):
        ys, xs = np.nonzero(m)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)


def test_shapes_clutter_and_noise_change_only_what_they_should():
    clean, noisy = _config("shapes_clean"), _config("shapes_noisy")
    assert clean["images"].shape == (8, 16, 16, 1)
    np.testing.assert_array_equal(clean["labels"], noisy["labels"])
    np.testing.assert_array_equal(clean["masks"], noisy["masks"])
    assert noisy["images"].min() >= 0 and noisy["images"].max() <= 1
    assert 0.05 < np.std(noisy["images"] - clean["images"]) < 0.15
    _check_labels_by_template(clean["masks"], clean["labels"], 4)


def _check_watermark(b, mode, size=4):
    images, labels, flags = b["images"], b["labels"], b["watermark"]
    board = (np.add.outer(np.arange(size), np.arange(size)) % 2 == 0).astype(np.float32)
    patch = images[:, :size, :size, 0]
    assert not b["masks"][:, :size, :size].any(), "the object entered the watermark patch"
    pos = labels == 1
    n = len(labels)
    if mode == "none":
        assert not flags.any()
    elif mode == "flipped":
        np.testing.assert_array_equal(flags, ~pos)
    elif mode == "correlated":
        agree = (flags == pos).mean()
        assert agree < 1.0 and abs(agree - 0.98) < 4 * math.sqrt(0.98 * 0.02 / n), agree
    else:
        assert abs(flags[pos].mean() - 0.5) < 0.12 and abs(flags[~pos].mean() - 0.5) < 0.12
    return patch, board, flags


@pytest.mark.parametrize("mode", data.WATERMARK_MODES)
def test_shapes_watermark_modes(mode):
    b, none = _config(f"wm_shapes_{mode}"), _config("wm_shapes_none")
    np.testing.assert_array_equal(b["labels"], none["labels"])  # same key: same shapes in every mode
    patch, board, flags = _check_watermark(b, mode)
    np.testing.assert_array_equal(patch[flags], np.broadcast_to(board, (flags.sum(), 4, 4)))
    assert (patch[~flags] == 0).all()
    np.testing.assert_array_equal(b["images"][:, 4:], none["images"][:, 4:])


@pytest.fixture(scope="module")
def detection():
    return _config("detection")


def test_detection_targets_and_padding(detection):
    b = detection
    assert b["images"].shape == (24, 64, 64, 3) and b["labels"].shape == (24, 5) and b["boxes"].shape == (24, 5, 4)
    valid = b["valid"]
    np.testing.assert_array_equal(valid.sum(1), b["num_objects"])
    assert b["num_objects"].min() >= 1 and b["num_objects"].max() <= 5
    assert (b["labels"][~valid] == -1).all() and (b["labels"][valid] >= 0).all() and (b["labels"] < 5).all()
    assert (b["boxes"][~valid] == 0).all() and not b["masks"][~valid].any()
    assert (b["boxes"] >= 0).all() and (b["boxes"] <= 1).all()


def test_detection_boxes_tightly_bound_each_shape(detection):
    b = detection
    px = np.asarray(data.boxes_to_pixels(b["boxes"], 64))
    assert (px[b["valid"]] >= -1e-4).all() and (px[b["valid"]] <= 64 + 1e-4).all()
    n = 0
    for i, m in zip(*np.nonzero(b["valid"]), strict=True):
        ys, xs = np.nonzero(b["masks"][i, m])
        assert len(xs) > 0
        np.testing.assert_allclose(px[i, m], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)
        _check_labels_by_template(b["masks"][i, m][None], b["labels"][i, m][None], 5)
        n += 1
    assert n > 40
    # drawn pixels = union of the object masks (black background, no noise)
    np.testing.assert_array_equal((b["images"] > 0).any(-1), b["masks"].any(1))


def test_detection_visibility(detection):
    b = detection
    vis, valid, masks = b["visible"], b["valid"], b["masks"]
    assert (vis[~valid] == 0).all() and (vis[valid] > 0).all() and (vis <= 1).all()
    area = masks.sum((2, 3))
    painted = (b["images"] > 0).any(-1).sum((1, 2))
    # every painted pixel is owned by exactly one object
    np.testing.assert_allclose((vis * area).sum(1), painted, rtol=1e-5)
    for i in range(len(vis)):
        for m in np.flatnonzero(valid[i]):
            others = np.delete(masks[i], m, axis=0).any(0)
            alone = (masks[i, m] & ~others).sum() / area[i, m]  # pixels no other shape covers
            assert vis[i, m] >= alone - 1e-6
        assert vis[i, valid[i]].max() == 1.0  # the shape painted last is whole


def test_detection_paints_small_shapes_over_large_ones(detection):
    b = detection
    images, masks = b["images"], b["masks"]
    size = np.round(b["boxes"][..., 2:].max(-1) * 64)  # box side in px: within 1 px of 2 * radius
    cover = masks.sum(1)  # (B, H, W) how many shapes cover each pixel
    checked = 0
    for i in range(len(images)):
        for m, n in zip(*np.nonzero(b["valid"][i][:, None] & b["valid"][i][None, :]), strict=True):
            if size[i, m] + 3 > size[i, n]:
                continue  # only pairs whose radii are surely ordered: m smaller than n
            both = masks[i, m] & masks[i, n] & (cover[i] == 2)
            own = masks[i, m] & (cover[i] == 1)
            if both.any() and own.any():
                colour = images[i][own][0]
                np.testing.assert_array_equal(images[i][both], np.broadcast_to(colour, images[i][both].shape))
                checked += 1
    assert checked >= 3, checked


def test_detection_without_overlap():
    b = _config("detection_grid")
    assert (b["masks"].sum(1) <= 1).all(), "shapes overlap"
    assert (b["visible"] == 1).all()


def test_boxes_to_pixels_numbers():
    boxes = np.array([[0.5, 0.25, 0.5, 0.25]])
    np.testing.assert_allclose(data.boxes_to_pixels(boxes, (40, 20)), [[5.0, 5.0, 15.0, 15.0]])
    with pytest.raises(ValueError, match="last axis of 4"):
        data.boxes_to_pixels(np.zeros((3, 5)), 8)


@pytest.mark.parametrize("mode", data.WATERMARK_MODES)
def test_bars_watermark(mode):
    b = _config(f"wm_bars_{mode}")
    images, labels, masks, flags = b["images"], b["labels"], b["masks"], b["watermark"]
    assert images.shape == (400, 16, 16, 1) and 0 <= images.min() and images.max() <= 1
    assert (masks.sum((1, 2)) == 5).all()
    rows, cols = masks.any(2).sum(1), masks.any(1).sum(1)  # rows / columns the bar touches
    np.testing.assert_array_equal(np.where(labels == 1, cols, rows), 1)
    np.testing.assert_array_equal(np.where(labels == 1, rows, cols), 5)
    ys, xs = np.nonzero(masks.any(0))  # the bar can reach every edge of the image
    assert {ys.min(), xs.min(), ys.max(), xs.max()} == {0, 15}
    patch, board, flags = _check_watermark(b, mode)
    # under noise sigma = 0.35 the stamped patch is still far closer to the board than to blank
    if flags.any():
        d_board = np.abs(patch[flags] - board).mean()
        assert d_board < np.abs(patch[flags]).mean() - 0.2
    # noise scale: bar pixels (value 1) can only be pulled down; E[shortfall] = sigma / sqrt(2 pi)
    shortfall = 1 - images[..., 0][masks].mean()
    assert abs(shortfall - 0.35 / math.sqrt(2 * math.pi)) < 0.02, shortfall


# ---------------------------------------------------------------------------------------------
# Digits and sample_batch
# ---------------------------------------------------------------------------------------------


def test_load_digits_split():
    train, test = data.load_digits()
    assert train["images"].shape[1:] == (8, 8, 1) and train["images"].dtype == np.float32
    assert len(train["labels"]) + len(test["labels"]) == 1797
    assert abs(len(test["labels"]) / 1797 - 0.25) < 0.01
    assert train["images"].min() == 0 and train["images"].max() == 1
    assert set(test["labels"].tolist()) == set(range(10))
    np.testing.assert_allclose(np.bincount(test["labels"]) / np.bincount(train["labels"]), 1 / 3, atol=0.03)
    train2, test2 = data.load_digits()
    np.testing.assert_array_equal(test["images"], test2["images"])
    _, test3 = data.load_digits(seed=1)
    assert not np.array_equal(test["images"], test3["images"])


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install tinytf\[data\]"):
        data.load_digits()


def test_sample_batch_keeps_rows_aligned():
    arrays = {"x": np.arange(7 * 3).reshape(7, 3), "y": np.arange(7)}
    b = _np(jax.jit(functools.partial(data.sample_batch, data=arrays, batch_size=11))(KEY0))
    np.testing.assert_array_equal(b["x"], arrays["x"][b["y"]])
    with pytest.raises(ValueError, match="shared first dimension"):
        data.sample_batch(KEY0, {"x": np.zeros(3), "y": np.zeros(4)}, batch_size=2)


# ---------------------------------------------------------------------------------------------
# Error messages and layering
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,match", [
    (lambda: data.copy_task(0, batch_size=2), TypeError, "jax.random.key"),
    (lambda: data.copy_task(KEY0, batch_size=0), ValueError, "batch_size must be >= 1"),
    (lambda: data.copy_task(KEY0, batch_size=2.0), TypeError, "batch_size must be a Python int"),
    (lambda: data.copy_task(KEY0, batch_size=[2]), TypeError, "batch_size must be a Python int"),  # unhashable
    (lambda: data.copy_task(KEY0, batch_size=np.array(2)), TypeError, "batch_size must be a Python int"),
    (lambda: data.copy_task(KEY0, batch_size=2, length=5, vocab_size=3, distinct=True), ValueError, "length <= vocab"),
    (lambda: data.associative_recall(KEY0, batch_size=2, num_pairs=9, num_keys=8), ValueError, "num_pairs must be <= 8"),
    (lambda: data.needle_haystack(KEY0, batch_size=2, max_items=4, min_items=5), ValueError, "min_items must be <= 4"),
    (lambda: data.needle_haystack(KEY0, batch_size=2, max_items=4, near_miss_prob=1.5), ValueError, "near_miss_prob"),
    (lambda: data.make_bigram_backcopy_task(0, triggers=(1, 40)), ValueError, "triggers must be distinct ids"),
    (lambda: data.sample_bigram_backcopy(KEY0, "task", batch_size=2), TypeError, "BigramBackcopyTask"),
    (lambda: data.counting_task(KEY0, batch_size=2, seq_len=10), ValueError, "2 \\* max_count <= seq_len - 1"),
    (lambda: data.shapes_classification(KEY0, batch_size=2, watermark="sometimes"), ValueError, "watermark must be one of"),
    (lambda: data.shapes_classification(KEY0, batch_size=2, watermark="flipped"), ValueError, "needs watermark_size > 0"),
    (lambda: data.shapes_classification(KEY0, batch_size=2, image_size=16, max_size=0.45, watermark_size=4),
     ValueError, "cannot avoid"),
    (lambda: data.shapes_classification(KEY0, batch_size=2, image_size=16, min_size=0.05), ValueError, ">= 1.5 px"),
    (lambda: data.shapes_classification(KEY0, batch_size=2, channels=2), ValueError, "channels must be 1"),
    (lambda: data.shapes_detection(KEY0, batch_size=2, overlap=False, max_size=0.3), ValueError, "max_size <= 0.1667"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_data_imports_nothing_above_its_layer():
    root = pathlib.Path(data.__file__).parent
    forbidden = ("tinytf.nn", "tinytf.models", "tinytf.train", "tinytf.diagnostics", "tinytf.apps",
                 "tinytf.variants", "flax")
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


# ---------------------------------------------------------------------------------------------
# Synthetic DETR feature maps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["featmap", "featmap_clean"])
def test_feature_map_objects_sit_in_their_cells(name):
    b, kw = _config(name), CONFIGS[name][1]
    g, C, M = kw["grid"], kw["num_classes"], kw["max_objects"]
    B = kw["batch_size"]
    assert b["features"].shape == (B, g, g, C + 1) and b["labels"].shape == (B, M) and b["boxes"].shape == (B, M, 4)
    clean = b["features"].reshape(B, g * g, C + 1).argmax(-1)  # the class each cell shows
    for i in range(B):
        n = int(b["num_objects"][i])
        assert b["valid"][i].tolist() == [True] * n + [False] * (M - n)
        cells = b["cells"][i, :n]
        assert len(set(cells.tolist())) == n and (b["cells"][i, n:] == -1).all() and (b["labels"][i, n:] == -1).all()
        np.testing.assert_array_equal(clean[i, cells], b["labels"][i, :n])  # the feature says the class
        background = np.setdiff1d(np.arange(g * g), cells)
        assert (clean[i, background] == C).all()
        row, col = np.divmod(cells, g)  # the box is the cell, normalised
        np.testing.assert_allclose(b["boxes"][i, :n], np.stack([(col + 0.5) / g, (row + 0.5) / g,
                                                               np.full(n, 1 / g), np.full(n, 1 / g)], -1), atol=1e-6)
        assert (b["boxes"][i, n:] == 0).all()
    if kw.get("noise", 0.1) == 0.0:
        assert set(np.unique(b["features"]).tolist()) == {0.0, 1.0}
    else:  # noise of the requested size around the one-hot code
        resid = b["features"] - np.eye(C + 1)[clean.reshape(B, g, g)]
        assert abs(resid.std() - kw.get("noise", 0.1)) < 0.01


def test_feature_map_object_counts_and_cells_are_uniform():
    b = _config("featmap")
    counts = np.bincount(b["num_objects"], minlength=4)
    assert counts[0] == 0 and all(counts[k] > 40 for k in (1, 2, 3))  # U[1, 3] over 200 maps
    cells = b["cells"][b["valid"]]
    assert cells.min() >= 0 and cells.max() < 64 and len(np.unique(cells)) > 55


def test_feature_map_bad_arguments():
    with pytest.raises(ValueError, match="max_objects"):
        data.feature_map_detection(KEY0, batch_size=2, grid=2, max_objects=5)
    with pytest.raises(ValueError, match="noise"):
        data.feature_map_detection(KEY0, batch_size=2, noise=-1.0)
