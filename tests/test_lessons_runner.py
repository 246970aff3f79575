"""The lesson runner: claims compute `holds`, metrics.json has the documented shape."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from tinytf.apps.claims import Claim, LessonResult
from tinytf.apps.lessons import LESSONS, format_summary, run_lesson


def test_claim_holds_is_computed():
    assert Claim("a", "x < 1", 0.5, "<", 1).holds
    assert not Claim("b", "x > 1", 0.5, ">", 1).holds
    assert Claim("c", "x >= 1", 1.0, ">=", 1).holds
    assert not Claim("d", "nan never holds", float("nan"), "<", 1).holds
    with pytest.raises(ValueError, match="op must be one of"):
        Claim("e", "bad", 1, "==", 1)


def fake_run(quick, seed, out_dir, variant=None):
    result = LessonResult()
    result.metrics["baseline"] = {"loss": 1.5 + seed}
    result.metrics["fixed"] = {"loss": 0.5}
    result.claim("fix", "the fix lowers the loss", result.metrics["fixed"]["loss"] - result.metrics["baseline"]["loss"],
                 "<", 0)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(out_dir / "curve.png")
    plt.close(fig)
    result.figures.append("curve.png")
    return result


def test_run_lesson_writes_metrics_json(tmp_path):
    record = run_lesson("positions", quick=True, seed=3, out=tmp_path, run_fn=fake_run)
    saved = json.loads((tmp_path / "positions" / "metrics.json").read_text())
    assert saved == record
    assert set(saved) >= {"lesson", "title", "seed", "quick", "variant", "runtime_s", "metrics", "claims", "figures"}
    assert saved["claims"][0] == {"id": "fix", "text": "the fix lowers the loss", "value": -4.0, "op": "<",
                                  "threshold": 0.0, "holds": True}
    assert "[PASS] the fix lowers the loss" in format_summary(record)


def test_summary_keeps_long_metric_names_and_wraps():
    names = [f"a rather long metric name number {i}" for i in range(6)]
    record = {"title": "T", "lesson": "x", "seed": 0, "quick": True, "runtime_s": 1.0, "variant": None,
              "metrics": {"baseline": {n: float(i) for i, n in enumerate(names)}, "fixed": {"loss": 0.25}},
              "claims": [], "figures": []}
    text = format_summary(record, width=80)
    assert all(f"{n} = {i:.4g}" in text for i, n in enumerate(names))  # nothing truncated
    assert "loss = 0.25" in text and max(len(line) for line in text.splitlines()) <= 80


def test_run_lesson_rejects_missing_figures_and_bad_variant(tmp_path):
    def no_png(quick, seed, out_dir, variant=None):
        return LessonResult(figures=["missing.png"])

    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_lesson("positions", out=tmp_path, run_fn=no_png)
    assert not LESSONS["positions"].variant
    with pytest.raises(ValueError, match="does not take --variant"):
        run_lesson("positions", out=tmp_path, variant="softmax1", run_fn=fake_run)
