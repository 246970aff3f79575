"""Progress bars and status lines (tinytf.progress), and a History that prints short."""

import numpy as np

from tinytf.progress import labelled, progress_bar, quiet, say
from tinytf.train.history import History


def test_labelled_numbers_bars_and_prefixes_status_lines(capsys):
    with labelled("attention-sinks"):
        bars = [progress_bar(3, desc="fit", enabled=True) for _ in range(2)]
        say("fit: steps 0->3", enabled=True)
    bars.append(progress_bar(3, desc="fit", enabled=True))
    for bar in bars:
        bar.close()
    assert [bar.desc for bar in bars] == ["[attention-sinks] fit 1", "[attention-sinks] fit 2", "fit"]
    assert "[attention-sinks] fit 2: steps 0->3\n" in capsys.readouterr().err
    with labelled("x"):
        say("no bar yet: as it is", enabled=True)
    assert capsys.readouterr().err == "[x] no bar yet: as it is\n"
    with quiet(), labelled("x"):
        say("hidden")
    assert capsys.readouterr().err == ""


def test_history_repr_is_short():
    history = History(final_step=3000, wall_time_s=12.34, steps_per_s=250.0)
    history.extend(np.arange(1, 3001), {"loss": np.linspace(3.0, 0.123456, 3000)})
    history.log(3000, {"eval/accuracy": 0.9375, "maps": np.zeros((2, 5, 7))})
    for i in range(15):
        history.log(3000, {f"extra/{i}": float(i)})
    text = repr(history)
    assert text.splitlines()[0] == "History(steps 0->3000, 12.3 s (compile 0.0 s), 250.0 steps/s)"
    assert "  loss: 3000 values, last 0.1235 at step 3000" in text
    assert "  eval/accuracy: 1 value, last 0.9375 at step 3000" in text
    assert "  maps: 1 value, last array(2, 5, 7) at step 3000" in text
    assert "... and 6 more series: extra/9, extra/10" in text
    assert len(text) < 1000 and str(history) == text
