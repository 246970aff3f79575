"""Variants: resolution from the current directory, the contract, and the two published variants.

The contract's failures are tested one by one, each with the message a user reads. The
named variants softpick and differential attention are compared with their formulas
written out independently in numpy.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinytf.variant_contract import VariantError, check_variant, load_variant, variant_fingerprint
from tinytf.variants import DIFF_LAMBDA, VARIANTS, differential_attention, get_variant, softpick

PROBES = '''
import jax, jax.numpy as jnp, numpy as np

def good(q, k, v, mask, bias):
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / jnp.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, -1e30)
    w = jax.nn.softmax(logits, -1)
    if mask is not None:
        w = jnp.where(mask, w, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", w, v), w

def three_args(q, k, v):
    return good(q, k, v, None, None)

def merged_heads(q, k, v, mask, bias):
    out, w = good(q, k, v, mask, bias)
    return out.reshape(out.shape[0], out.shape[1], -1), w       # (B, T, N*H): a shape error

def heads_second(q, k, v, mask, bias):
    out, w = good(q, k, v, mask, bias)
    return out, jnp.swapaxes(w, 1, 2)                           # weights (B, T, N, S): wrong layout

def numpy_inside(q, k, v, mask, bias):
    out, w = good(q, k, v, mask, bias)
    return jnp.asarray(np.tanh(np.asarray(out))), w             # fine eagerly, not under jit

def nan_gradient(q, k, v, mask, bias):
    out, w = good(q, k, v, mask, bias)
    return out + jnp.sqrt(jnp.sum(q * 0.0)), w                  # sqrt at 0: finite value, NaN gradient

def ignores_mask(q, k, v, mask, bias):
    return good(q, k, v, None, bias)                            # sees the future

def minus_inf(q, k, v, mask, bias):
    logits = jnp.einsum("btnh,bsnh->bnts", q, k)
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)              # an all-masked row gives NaN
    w = jax.nn.softmax(logits, -1)
    return jnp.einsum("bnts,bsnh->btnh", w, v), w

def output_only(q, k, v, mask, bias):
    return good(q, k, v, mask, bias)[0]

def leaky_normalizer(logits, mask):
    return jax.nn.softmax(logits, -1)                           # ignores the mask

def uniform_empty_rows(q, k, v, mask, bias):
    logits = jnp.einsum("btnh,bsnh->bnts", q, k)
    if mask is not None:
        logits = jnp.where(mask, logits, -1e30)                 # an all-masked row becomes uniform
    w = jax.nn.softmax(logits, -1)
    return jnp.einsum("bnts,bsnh->btnh", w, v), w

not_a_function = 3
'''


@pytest.fixture
def probes(tmp_path, monkeypatch):
    """A user's file of attention functions in the current directory."""
    (tmp_path / "probes.py").write_text(PROBES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------- resolution
def test_file_and_module_specs_resolve_from_the_current_directory(probes):
    by_path = get_variant("probes.py:good")
    by_module = get_variant("probes:good")
    assert by_path.fn.__name__ == by_module.fn.__name__ == "good"
    sub = probes / "sub"
    sub.mkdir()
    (sub / "deeper.py").write_text("from probes import good as mine\n")
    assert get_variant("sub/deeper.py:mine").fn.__name__ == "good"
    assert get_variant(str(probes / "probes.py") + ":good").fn.__name__ == "good"  # absolute paths too


@pytest.mark.parametrize("spec, message", [
    ("nope.py:good", "no file 'nope.py'"),
    ("nope_module:good", "cannot load module 'nope_module'"),
    ("probes.py:godo", "has no attribute 'godo'; did you mean 'good'"),
    ("probes.py:not_a_function", "is a int: expected a function"),
    ("probes.py:", "expected 'module:function'"),
    ("vanila", "did you mean 'vanilla'"),
])
def test_a_variant_that_cannot_be_loaded_says_what_was_looked_for(probes, spec, message):
    with pytest.raises(ValueError, match=message):
        check_variant(spec)


# ---------------------------------------------------------------------------- the contract
def test_a_correct_variant_passes_every_check(probes):
    report = check_variant("probes.py:good")
    assert report.passed == ("load", "signature", "output", "weights layout", "jit", "masks", "gradients",
                             "empty rows", "causality", "layer")
    assert report.notes == ()


@pytest.mark.parametrize("name, check, message", [
    ("three_args", "signature", r"three_args\(q, k, v\) cannot be called as fn\(q, k, v, mask, bias\)"),
    ("output_only", "output", r"returned an array of shape \(2, 5, 3, 8\): expected a pair \(out, weights\)"),
    ("merged_heads", "output", r"out of shape \(2, 5, 24\): expected \(B, T, N, H\) = \(2, 5, 3, 8\)"),
    ("heads_second", "weights layout",
     r"weights of shape \(2, 5, 3, 7\), layout \(B, T, N, S\): expected \(B, N, T, S\) = \(2, 3, 5, 7\).*"
     r"jnp.transpose\(weights, \(0, 2, 1, 3\)\)"),
    ("numpy_inside", "jit", "cannot be compiled with jax.jit.*use jax.numpy, not numpy"),
    ("nan_gradient", "gradients", "d out/d q under a causal mask has 240 NaN/inf entries.*sqrt or log at 0"),
    ("minus_inf", "empty rows", "NaN/inf.*when a query row has no visible key.*finite -1e30"),
    ("ignores_mask", "causality", r"changing only tokens 4..6 changed the output at earlier position\(s\) "
                                  r"\[0, 1, 2, 3\].*lets queries see the future"),
])
def test_each_broken_promise_is_one_clear_error(probes, name, check, message):
    with pytest.raises(VariantError, match=rf"probes.py:{name}' breaks the contract \[{check}\]: .*{message}"):
        check_variant(f"probes.py:{name}")


def test_a_normalizer_that_ignores_the_mask_is_refused(probes, monkeypatch):
    import importlib
    import sys

    from tinytf.variants import AttentionConfig

    # A user's own import of their file (not through a spec). Put its folder on the path here: whether
    # '' is on sys.path, or an earlier test left another folder's `probes` in sys.modules, depends on
    # which tests ran before in this process (pytest-xdist hands them out as workers free up).
    monkeypatch.syspath_prepend(str(probes))
    monkeypatch.delitem(sys.modules, "probes", raising=False)
    module = importlib.import_module("probes")
    assert module.__file__ == str(probes / "probes.py")
    with pytest.raises(VariantError, match=r"\[causality\]: normalizer leaky_normalizer.*masked keys non-zero"):
        check_variant(AttentionConfig(normalizer=module.leaky_normalizer))


def test_harmless_departures_are_notes_not_errors(probes):
    report = check_variant("probes.py:uniform_empty_rows")
    assert any("fully masked query row gets non-zero weights" in n for n in report.notes)


def test_load_variant_checks_once_per_source_and_again_after_an_edit(probes):
    first = load_variant("probes.py:good")
    assert load_variant("probes.py:good") is first  # same file: checked once
    before = variant_fingerprint("probes.py:good")
    (probes / "probes.py").write_text(PROBES.replace("jnp.sqrt(q.shape[-1])", "jnp.sqrt(q.shape[-1] * 1.0)"))
    assert variant_fingerprint("probes.py:good") != before
    assert load_variant("probes.py:good") is not first
    assert load_variant("vanilla").passed == ("builtin",)  # tinytf's own variants are tested here instead


@pytest.mark.parametrize("name", ["vanilla", "softpick", "diff"])
def test_tinytfs_own_function_variants_pass_the_contract(name):
    assert check_variant(name).passed[-1] == "layer"


# ------------------------------------------------------------------------ the two variants
def numpy_softpick(x, mask, eps=1e-6):
    """Zuhri et al. 2025, written as the paper states it: relu(e^x - 1) / (sum |e^x - 1| + eps), visible keys only."""
    x = x.astype(np.float64)
    e = np.where(mask, np.exp(x) - 1.0, 0.0)
    return np.maximum(e, 0.0) / (np.abs(e).sum(-1, keepdims=True) + eps)


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_softpick_matches_its_formula(scale):
    rng = np.random.default_rng(0)
    x = scale * rng.standard_normal((3, 5, 7, 11)).astype(np.float32)
    mask = rng.random((1, 1, 7, 11)) < 0.7
    mask[..., 0] = True
    got = np.asarray(softpick(jnp.asarray(x), jnp.asarray(mask)))
    want = numpy_softpick(x, np.broadcast_to(mask, x.shape))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
    assert (got[~np.broadcast_to(mask, x.shape)] == 0).all()
    assert (got.sum(-1) <= 1 + 1e-6).all()  # rows need not sum to one: no key must take the leftover


def test_softpick_is_zero_on_negative_logits_and_on_empty_rows_with_finite_gradients():
    x = jnp.array([[-1.0, -2.0, -0.5], [2.0, -1.0, 0.5]])
    w = softpick(x)
    np.testing.assert_array_equal(np.asarray(w[0]), 0.0)
    empty = jnp.zeros((2, 3), bool)
    np.testing.assert_array_equal(np.asarray(softpick(x, empty)), 0.0)
    g = jax.grad(lambda x: softpick(x, empty.at[1].set(True)).sum())(x)
    assert np.isfinite(np.asarray(g)).all()


def numpy_differential(q, k, v, mask, lam):
    """Ye et al. 2024, eq. for one head, written out: (1 - lam) RMSNorm((softmax(q1 k1/sqrt d) - lam softmax(q2 k2/sqrt d)) v)."""
    B, T, N, H = q.shape
    d = H // 2
    out = np.zeros((B, T, N, H))
    weights = np.zeros((B, N, T, k.shape[1]))
    for b in range(B):
        for n in range(N):
            maps = []
            for half in (slice(0, d), slice(d, H)):
                s = q[b, :, n, half] @ k[b, :, n, half].T / np.sqrt(d)  # (T, S)
                s = np.where(mask, s, -np.inf)
                e = np.exp(s - s.max(-1, keepdims=True))
                maps.append(e / e.sum(-1, keepdims=True))
            a = maps[0] - lam * maps[1]
            o = a @ v[b, :, n, :]  # (T, H)
            o = o / np.sqrt((o ** 2).mean(-1, keepdims=True) + 1e-5)
            out[b, :, n], weights[b, n] = (1 - lam) * o, a
    return out, weights


def test_differential_attention_matches_its_formula():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in [(3, 5, 7, 6), (3, 11, 7, 6), (3, 11, 7, 6)])
    mask = np.arange(11)[None, :] <= np.arange(5)[:, None] + 6  # (T, S) causal, bottom-right
    out, w = differential_attention(*map(jnp.asarray, (q, k, v)), jnp.asarray(mask)[None, None])
    want_out, want_w = numpy_differential(q, k, v, mask, DIFF_LAMBDA)
    np.testing.assert_allclose(np.asarray(w), want_w, atol=2e-6)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1 - DIFF_LAMBDA, atol=1e-5)  # each map sums to one
    with pytest.raises(ValueError, match="head dim H=5 must be even"):
        differential_attention(*(jnp.zeros((1, 2, 1, 5)),) * 3)


def test_the_named_variants_are_registered():
    assert VARIANTS["softpick"].normalizer is softpick
    assert VARIANTS["diff"].fn is differential_attention
