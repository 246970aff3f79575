"""Progress bars for long work (tqdm), and one process-wide switch to silence them.

`tqdm.auto` draws a text bar in a terminal and a widget in a notebook. Everything
long in tinytf (training, lessons, benchmarks, grading a class) asks `progress_enabled`
whether to draw: on by default, off after `set_quiet()` (the CLI's `--quiet`) or with
the environment variable `TINYTF_QUIET=1`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings

_quiet: bool | None = None  # None: follow $TINYTF_QUIET
_label: list = []  # [label, bars drawn so far, {thread: (its last bar's desc, number)}] inside `labelled(...)`
_lock = threading.Lock()  # bars may start in several threads at once (`tinytf.train.parallel_map`)


def set_quiet(quiet: bool = True) -> None:
    """Silence (or re-enable) every tinytf progress bar and summary line in this process."""
    global _quiet
    _quiet = bool(quiet)


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """`with quiet():` silences progress inside the block and restores the switch after it."""
    global _quiet
    previous = _quiet
    if enabled:
        _quiet = True
    try:
        yield
    finally:
        _quiet = previous


@contextlib.contextmanager
def labelled(label: str):
    """Inside the block, bars read "[label] desc N" (numbered) and status lines start with "[label]"
    (a line "desc: ..." right after bar N, from the thread that drew it, reads "[label] desc N: ...").

    The lesson runner wraps a lesson in it, so its many training runs read as one numbered list
    ("[attention-sinks] fit 3") instead of a column of identical "fit" bars.
    """
    global _label
    previous = _label
    _label = [label, 0, {}]
    try:
        yield
    finally:
        _label = previous


def is_quiet() -> bool:
    """True after `set_quiet()`, or when $TINYTF_QUIET is set to anything but "" or "0"."""
    if _quiet is not None:
        return _quiet
    return os.environ.get("TINYTF_QUIET", "") not in ("", "0")


def progress_enabled(progress: bool | None) -> bool:
    """An explicit True/False wins; None follows the process-wide switch."""
    return (not is_quiet()) if progress is None else bool(progress)


def progress_bar(total: int | None, *, desc: str, enabled: bool | None = None, unit: str = "step",
                 initial: int = 0, leave: bool = False):
    """A tqdm bar on stderr (a widget in notebooks); a disabled bar when progress is off."""
    if _label:
        with _lock:
            _label[1] += 1
            _label[2][threading.get_ident()] = (desc, _label[1])
            desc = f"[{_label[0]}] {desc} {_label[1]}"
    with warnings.catch_warnings():  # tqdm.auto warns when ipywidgets is missing; it then draws text
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=not progress_enabled(enabled), dynamic_ncols=True, mininterval=0.2)


def say(message: str, *, enabled: bool | None = None) -> None:
    """Print a status line on stderr unless progress is off."""
    if progress_enabled(enabled):
        if _label:
            last, number = _label[2].get(threading.get_ident(), (None, 0))
            if last and message.startswith(last + ":"):
                message = f"{last} {number}" + message[len(last):]
            message = f"[{_label[0]}] {message}"
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


__all__ = ["set_quiet", "quiet", "labelled", "is_quiet", "progress_enabled", "progress_bar", "say"]
