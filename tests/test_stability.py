"""attention_watch against a numpy recomputation from the captured maps and logits."""

import jax
import numpy as np
import pytest
from flax import nnx

from tinytf.capture import capture_attention
from tinytf.diagnostics import attention_watch
from tinytf.models import CausalLM, LMConfig
from tinytf.variants import AttentionConfig


def numpy_watch(model, tokens, skip_first):
    weights, logits = capture_attention(model, tokens, with_logits=True)
    T = tokens.shape[1]
    causal = np.tril(np.ones((T, T), bool))
    peak = max(float(np.abs(np.asarray(s))[..., causal].max()) for s in logits.values())
    per_head = []
    for w in weights.values():
        w = np.asarray(w, np.float64)  # (B, N, T, T)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)  # (B, N, T)
        per_head.extend(ent[:, :, skip_first:].mean(axis=(0, 2)))
    return peak, min(per_head), float(np.mean(per_head))


@pytest.mark.parametrize("cap", [None, 0.05])
def test_attention_watch_matches_numpy_and_logs_logits_before_the_cap(cap):
    config = LMConfig.micro(num_layers=3, attention=AttentionConfig(logit_cap=cap))
    model = CausalLM(config, rngs=nnx.Rngs(5))
    tokens = jax.random.randint(jax.random.key(7), (3, 11), 0, config.vocab_size)
    got = attention_watch(tokens, skip_first=3)(0, model)
    peak, low, mean = numpy_watch(model, tokens, 3)
    np.testing.assert_allclose([got["max_logit"], got["entropy_min"], got["entropy_mean"]], [peak, low, mean],
                               rtol=1e-5)
    assert low < mean
    if cap is not None:  # one layer, same weights without the cap: the same logits, sharper maps
        one_layer = LMConfig.micro(num_layers=1, attention=AttentionConfig(logit_cap=cap))
        capped = attention_watch(tokens, skip_first=3)(0, CausalLM(one_layer, rngs=nnx.Rngs(5)))
        ref = attention_watch(tokens, skip_first=3)(0, CausalLM(LMConfig.micro(num_layers=1), rngs=nnx.Rngs(5)))
        got = capped
        np.testing.assert_allclose(got["max_logit"], ref["max_logit"], rtol=1e-6)
        assert got["max_logit"] > cap  # the logged logit is the one before the cap
        assert got["entropy_mean"] > ref["entropy_mean"]  # a tight cap flattens the rows


def test_attention_watch_checks_its_arguments():
    tokens = np.zeros((2, 5), np.int32)
    with pytest.raises(ValueError, match=r"tokens has shape \(2, 5\): expected \(B, T\) with T > skip_first=5"):
        attention_watch(tokens, skip_first=5)
    with pytest.raises(ValueError, match=r"tokens has shape \(5,\)"):
        attention_watch(tokens[0], skip_first=0)
