"""--variant on the command line: the contract runs before any training; lessons that cannot take one say why."""

import pytest

from tinytf.apps.cli import main
from tinytf.apps.lessons import LESSONS, run_lesson
from tinytf.variant_contract import VariantError

LEAK = "import jax, jax.numpy as jnp\n" \
       "def attn(q, k, v, mask=None, bias=None):\n" \
       "    w = jax.nn.softmax(jnp.einsum('btnh,bsnh->bnts', q, k), -1)\n" \
       "    return jnp.einsum('bnts,bsnh->btnh', w, v), w\n"


def _never(**_):
    raise AssertionError("the lesson ran although the variant breaks the contract")


def test_lesson_checks_the_variant_before_training(tmp_path, monkeypatch):
    (tmp_path / "leak.py").write_text(LEAK)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VariantError, match="causal"):
        run_lesson("attention-sinks", out=tmp_path, variant="leak.py:attn", run_fn=_never)


def test_refusal_names_the_lesson_the_reason_and_the_alternatives(tmp_path):
    refusing = [i for i in LESSONS.values() if not i.variant]
    if not refusing:
        pytest.skip("every lesson takes --variant")
    info = refusing[0]
    with pytest.raises(ValueError) as err:
        run_lesson(info.id, out=tmp_path, variant="softpick", run_fn=_never)
    message = str(err.value)
    assert f"lesson {info.id!r} does not take --variant: {info.no_variant_reason}" in message
    assert info.no_variant_reason and "tinytf compare softpick" in message
    assert all(i.id in message for i in LESSONS.values() if i.variant)


@pytest.mark.parametrize("bench", [["attention", "--lengths", "8"], ["train", "--steps", "1"]])
def test_bench_refuses_a_broken_variant_before_timing(tmp_path, monkeypatch, bench):
    (tmp_path / "leak.py").write_text(LEAK)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VariantError, match="causal"):
        main(["--quiet", "bench", *bench, "--variant", "leak.py:attn"])
