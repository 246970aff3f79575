"""The experiments of `tinytf compare` (tinytf/apps/battery.py) and the needle retriever they use."""

import jax
import numpy as np
import pytest
from flax import nnx

from tinytf import data
from tinytf.apps import battery
from tinytf.models import NeedleRetriever, needle_slot
from tinytf.variants import get_variant


def test_needle_slot_points_at_the_needle_after_right_alignment():
    batch = data.needle_haystack(jax.random.key(3), batch_size=7, max_items=11, min_items=5)
    keys = np.asarray(batch["item_keys"])[:, ::-1]  # what the retriever attends over
    slot = np.asarray(needle_slot(batch))
    valid = np.asarray(batch["valid"])[:, ::-1]
    for b in range(7):
        assert valid[b, slot[b]]
        np.testing.assert_array_equal(keys[b, slot[b]], np.asarray(batch["query"])[b])
        assert int(np.asarray(batch["item_values"])[b, ::-1][slot[b]]) == int(batch["target"][b])
        assert valid[b, -int(batch["lengths"][b]):].all() and not valid[b, :-int(batch["lengths"][b])].any()


def test_needle_retriever_ignores_padding_and_refuses_positions():
    model = NeedleRetriever("vanilla", d_model=16, num_values=5, num_subkeys=3, rngs=nnx.Rngs(0))
    batch = data.needle_haystack(jax.random.key(1), batch_size=3, max_items=7, num_subkeys=3, num_values=5)
    out = model(batch)
    assert out.shape == (3, 5)
    padded = data.needle_haystack(jax.random.key(1), batch_size=3, max_items=7, num_subkeys=3, num_values=5)
    # Append 4 padding slots (key (0, 0), value 0, invalid): the logits must not move.
    pad = lambda x, v: np.concatenate([np.asarray(x), np.full((3, 4) + x.shape[2:], v, x.dtype)], 1)  # noqa: E731
    padded = {**padded, "item_keys": pad(padded["item_keys"], 0), "item_values": pad(padded["item_values"], 0),
              "valid": pad(padded["valid"], False)}
    np.testing.assert_allclose(model(padded), out, atol=1e-5)
    with pytest.raises(ValueError, match="position='rope'.*use 'none'"):
        NeedleRetriever(get_variant("vanilla").replace(position="rope"), rngs=nnx.Rngs(0))


def test_rank_residual_collapses_with_depth_without_skips():
    out = battery.rank(get_variant("vanilla"), 0, battery.BatteryConfig.tiny().settings("rank"))
    assert set(out) == {"residual@1", "residual@2", "residual@4", "log10_residual"}
    assert out["residual@4"] < out["residual@2"] < out["residual@1"]  # Dong et al. 2021: collapse with depth
    assert out["log10_residual"] == pytest.approx(np.log10(out["residual@4"]))


def test_induction_is_deterministic_per_seed():
    settings = battery.BatteryConfig.tiny().settings("induction")
    first = battery.induction(get_variant("vanilla"), 0, settings)
    assert battery.induction(get_variant("vanilla"), 0, settings) == first
    assert set(first) == {"accuracy", "loss", "stopped_early"} and 0 <= first["accuracy"] <= 1


def test_settings_are_the_cache_key_of_each_experiment():
    quick, tiny = battery.BatteryConfig.quick(), battery.BatteryConfig.tiny()
    for name in [*battery.EXPERIMENTS, "cost"]:
        assert "seeds" not in quick.settings(name)
    assert quick.settings("rank") != tiny.settings("rank")
    assert quick.settings("sinks") == battery.BatteryConfig.quick().settings("sinks")
