"""`tinytf compare` on the tiny battery: the JSON has every row, a rerun hits the cache with equal numbers."""

import json

import pytest

from tinytf.apps import battery, compare
from tinytf.apps.battery import BatteryConfig


def test_compare_writes_every_row_and_reruns_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTF_COMPARE_CACHE", str(tmp_path / "cache"))
    config = BatteryConfig.tiny()
    first = compare.run_compare(["vanilla", "softpick"], config, out=tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "compare.json").read_text())
    assert list(saved["rows"]) == list(config.experiments)
    assert set(saved["variants"]) == {"vanilla", "softpick"} and saved["cache"]["hits"] == 0
    assert (tmp_path / "a" / "compare.png").stat().st_size > 10_000
    for row in config.experiments:
        assert set(saved["rows"][row]["verdicts"]) == {"softpick"}
    for row in ("rank", "induction"):
        for spec in ("vanilla", "softpick"):
            assert list(saved["rows"][row]["variants"][spec]["seeds"]) == [str(s) for s in config.seeds]
    assert "one seed" in saved["rows"]["induction"]["verdicts"]["softpick"]
    assert saved["rows"]["cost"]["ratios"]["vanilla"]["time@64"] == 1.0
    assert saved["versions"]["jax"] and saved["config"]["seeds"] == [0]

    second = compare.run_compare(["softpick", "vanilla"], config, out=tmp_path / "b")
    assert second["cache"]["hits"] == 2 * 2 * len(config.seeds)  # rank and induction, two variants
    for row in ("rank", "induction"):
        assert second["rows"][row]["variants"] == first["rows"][row]["variants"]
    for spec in ("vanilla", "softpick"):  # XLA's memory estimate is deterministic; times are not
        assert (second["rows"]["cost"]["variants"][spec]["temp_bytes@64"]
                == first["rows"]["cost"]["variants"][spec]["temp_bytes@64"])


def test_cache_key_changes_with_what_defines_a_result():
    s = BatteryConfig.tiny().settings("rank")
    key = compare.cache_key("abc", "rank", 0, s)
    assert key == compare.cache_key("abc", "rank", 0, dict(s))
    assert len({key, compare.cache_key("abd", "rank", 0, s), compare.cache_key("abc", "rank", 1, s),
                compare.cache_key("abc", "induction", 0, s),
                compare.cache_key("abc", "rank", 0, {**s, "rank_depth": 3})}) == 5


def test_verdict_rule_uses_the_spread_over_seeds():
    ref = {"mean": 0.24, "spread": 0.08, "n": 3}
    assert compare.verdict("sinks", {}, {"mean": 0.03, "spread": 0.01, "n": 3}, ref).startswith(
        "fewer sinks: 3% +- 1 vs 24% +- 8 (vanilla), 3 seeds")
    assert compare.verdict("sinks", {}, {"mean": 0.20, "spread": 0.01, "n": 3}, ref).startswith("no clear difference")
    assert compare.verdict("sinks", {}, {"mean": 0.9, "spread": None, "n": 1}, ref).startswith("no verdict (one seed)")
    assert compare.summarize([1.0, 3.0, None]) == {"mean": 2.0, "spread": pytest.approx(2 ** 0.5), "n": 2}


def test_cli_refuses_a_broken_variant_before_training(tmp_path):
    from tinytf.apps.cli import main
    from tinytf.variant_contract import VariantError
    bad = tmp_path / "bad.py"
    bad.write_text("def attn(q, k, v, mask=None, bias=None):\n    return q[..., :1], None\n")
    with pytest.raises(VariantError, match="shape"):
        main(["--quiet", "compare", f"{bad}:attn", "--quick", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    assert battery.QUICK_EXPERIMENTS == BatteryConfig.quick().experiments


@pytest.mark.slow
def test_every_row_of_the_tiny_config_runs_through_compare(tmp_path, monkeypatch):
    """All eight rows (tiny settings: too short to mean anything) end to end, one seed, two variants (~6+ min)."""
    from dataclasses import replace
    monkeypatch.setenv("TINYTF_COMPARE_CACHE", str(tmp_path / "cache"))
    config = replace(BatteryConfig.tiny(), experiments=BatteryConfig.full().experiments)
    report = compare.run_compare(["softpick"], config, out=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert list(saved["rows"]) == list(BatteryConfig.full().experiments) == list(report["rows"])
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    expected = {"sinks": {"sink_rate", "bos_mass_dormant", "excess_loss"}, "rank": {"residual@4", "log10_residual"},
                "dilution": {f"{m}@{n}" for m in ("needle_mass", "accuracy") for n in config.needle_lengths},
                "entropy": {"max_logit", "entropy_mean", "loss"}, "induction": {"accuracy", "loss"},
                "vit": {"accuracy"}, "detr": {"pair_cos", "ap50"}}
    for row, keys in expected.items():
        for spec in ("vanilla", "softpick"):
            metrics = saved["rows"][row]["variants"][spec]["seeds"]["0"]
            assert keys <= set(metrics), (row, spec, sorted(metrics))
            assert metrics[saved["rows"][row]["headline"]] is not None, (row, spec, metrics)
        assert set(saved["rows"][row]["verdicts"]) == {"softpick"}
        assert "one seed" in saved["rows"][row]["verdicts"]["softpick"], saved["rows"][row]["verdicts"]
    for accuracy in ("accuracy@32", "accuracy@64"):
        assert 0 <= saved["rows"]["dilution"]["variants"]["vanilla"]["seeds"]["0"][accuracy] <= 1
    assert saved["rows"]["cost"]["ratios"]["softpick"]["memory@64"] > 0
    assert "T=64" in saved["rows"]["cost"]["verdicts"]["softpick"]
