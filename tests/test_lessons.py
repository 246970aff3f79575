"""Every lesson runs in quick mode and every claim it makes holds (DESIGN.md section 8).

Multi-seed checks of the same claims are marked slow: `python -m pytest -m slow`.
"""

import json

import matplotlib.image as mpimg
import pytest

from tinytf.apps.lessons import available_lessons, run_lesson

LESSON_IDS = [info.id for info in available_lessons()]


def check_record(record, out_dir):
    assert record["claims"], "a lesson must make at least one measured claim"
    failed = [f"{c['text']}: {c['value']:.4g} {c['op']} {c['threshold']:g}" for c in record["claims"] if not c["holds"]]
    assert not failed, "claims that do not hold:\n" + "\n".join(failed)
    assert json.loads((out_dir / "metrics.json").read_text()) == record
    for name in record["figures"]:
        image = mpimg.imread(out_dir / name)
        assert image.shape[0] >= 200 and image.shape[1] >= 200 and image.std() > 0.01, name


@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_lesson_quick_mode_claims_hold(lesson_id, tmp_path):
    record = run_lesson(lesson_id, quick=True, seed=0, out=tmp_path)
    check_record(record, tmp_path / lesson_id)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_lesson_claims_hold_at_other_seeds(lesson_id, seed, tmp_path):
    record = run_lesson(lesson_id, quick=True, seed=seed, out=tmp_path)
    check_record(record, tmp_path / lesson_id)
