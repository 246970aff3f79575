"""`tinytf lesson attention-basics --use DIR`: the student's functions really drive the lesson."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tinytf.apps.lessons import load_lesson
from tinytf.apps.lessons import register_cli as register_lessons
from tinytf.grading.instructor import CHECKOUT_INSTRUCTOR_DIR, load_instructor
from tinytf.grading.plug import UseError, load_pieces, use_in_lesson

INSTRUCTOR = load_instructor(CHECKOUT_INSTRUCTOR_DIR)

# Subtly wrong: the weights are positive and sum to 1, but there is no exponential.
WRONG_SOFTMAX = """
import numpy as np

def softmax(x, mask=None, axis=-1):
    z = x - np.min(x, axis=axis, keepdims=True) + 1.0
    return z / np.sum(z, axis=axis, keepdims=True)
"""

SPY_ATTENTION = """
import numpy as np
CALLS = []

def scaled_dot_product_attention(query, key, value, mask=None):
    CALLS.append(query.shape)
    logits = np.einsum("btnh,bsnh->bnts", query, key) / np.sqrt(query.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", w, value), w
"""


def _folder(path, files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _lesson(folder, logs):
    module = load_lesson("attention-basics")
    use_in_lesson("attention-basics", module, folder, log=logs.append)
    return module


def _weights(module, seed=3):
    model = module.RecallHead(rngs=nnx.Rngs(seed))
    tokens = jax.random.randint(jax.random.key(seed), (5, 18), 0, 32)
    x = model.tokens_to_inputs(tokens)
    logits = jnp.einsum("bsh,bth->bst", model.query_proj(x), model.key_proj(x)) / np.sqrt(module.D)
    return np.asarray(module.RecallHead.attend(model, x)[1][:, 0]), np.asarray(logits)


def test_the_students_softmax_is_the_lessons_normaliser(tmp_path):
    logs = []
    good = _lesson(_folder(tmp_path / "good", {"01_softmax.py": INSTRUCTOR.sources["01_softmax"]}), logs)
    wrong = _lesson(_folder(tmp_path / "wrong", {"01_softmax.py": WRONG_SOFTMAX}), logs)
    assert "softmax:   YOURS (01_softmax.py: softmax, as the normaliser)" in logs[0]
    assert "attention: tinytf's dot_product_attention (02_attention.py not found" in logs[0]
    w_good, logits = _weights(good)
    np.testing.assert_allclose(w_good, np.asarray(jax.nn.softmax(logits, -1)), atol=1e-5)
    w_wrong, _ = _weights(wrong)
    z = logits - logits.min(-1, keepdims=True) + 1
    np.testing.assert_allclose(w_wrong, z / z.sum(-1, keepdims=True), atol=1e-5)  # the student's formula
    # on logits of a trained head's size (std ~ 3) the two normalisers are far apart
    q, k, v = (3 * jax.random.normal(key, (2, 7, 1, 5)) for key in jax.random.split(jax.random.key(1), 3))
    gap = wrong.dot_product_attention(q, k, v)[1] - good.dot_product_attention(q, k, v)[1]
    assert np.abs(np.asarray(gap)).max() > 0.1


def test_the_students_attention_runs_inside_training(tmp_path):
    logs = []
    spy = _lesson(_folder(tmp_path / "spy", {"02_attention.py": SPY_ATTENTION,
                                            "01_softmax.py": INSTRUCTOR.sources["01_softmax"]}), logs)
    assert "attention: YOURS (02_attention.py: scaled_dot_product_attention" in logs[0]
    calls = spy.dot_product_attention.__closure__  # the wrapper closes over the student's pieces
    student = next(c.cell_contents for c in calls).attention
    before = len(student.__globals__["CALLS"])  # the probe call
    spy.train_recall(0, steps=3)
    assert len(student.__globals__["CALLS"]) > before  # traced in training (jit: once per compiled shape)


@pytest.mark.slow
def test_a_wrong_softmax_fails_the_lessons_claims_and_a_right_one_passes(tmp_path, capsys):
    """End to end through the CLI, quick mode (300 steps): the claims follow the student's softmax."""
    parser = argparse.ArgumentParser()
    register_lessons(parser.add_subparsers())
    codes = {}
    for name, src in (("right", INSTRUCTOR.sources["01_softmax"]), ("wrong", WRONG_SOFTMAX)):
        folder = _folder(tmp_path / name, {"01_softmax.py": src})
        args = parser.parse_args(["lesson", "attention-basics", "--quick", "--use", str(folder),
                                  "--out", str(tmp_path / f"runs-{name}")])
        codes[name] = args.func(args)
        out = capsys.readouterr().out
        assert "softmax:   YOURS (01_softmax.py" in out
        codes[name] = (codes[name], "[FAIL] the trained head recalls the value" in out)
    assert codes == {"right": (0, False), "wrong": (3, True)}, codes


def test_lessons_and_folders_where_use_does_not_apply_say_so(tmp_path):
    with pytest.raises(UseError, match=r"lesson 'heads' does not take --use: only attention-basics"):
        use_in_lesson("heads", object(), tmp_path)
    with pytest.raises(UseError, match=r"--use .*missing: not a folder"):
        load_pieces(tmp_path / "missing")
    _folder(tmp_path / "stubs", {"01_softmax.py": "def softmax(x, mask=None, axis=-1):\n"
                                                  "    raise NotImplementedError('Exercise 1')\n"})
    with pytest.raises(UseError, match=r"neither 02_attention.py nor 01_softmax.py has a working function yet"):
        use_in_lesson("attention-basics", load_lesson("attention-basics"), tmp_path / "stubs")
    pieces = load_pieces(_folder(tmp_path / "inplace", {"01_softmax.py": "import numpy as np\n"
                                                        "def softmax(x, mask=None, axis=-1):\n"
                                                        "    x = np.exp(x)\n    x[0] = 0\n    return x\n"}))
    assert pieces.softmax is None and "softmax failed on a probe input (TypeError" in pieces.lines[1]


def test_the_lesson_cli_refuses_use_for_other_lessons(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register_lessons(parser.add_subparsers())
    args = parser.parse_args(["lesson", "dilution", "--quick", "--use", str(tmp_path), "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "does not take --use: only attention-basics" in capsys.readouterr().err
