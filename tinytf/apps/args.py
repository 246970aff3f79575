"""Command-line argument types: a bad flag is one clear line naming it, before anything runs.

Used as argparse `type=`s, so `tinytf bench attention --lengths -5` answers
"argument --lengths: expected an int >= 1, got '-5'" and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An int >= 1 (lengths, steps, repeats, heads)."""
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    """An int >= 0 (seeds)."""
    return _int(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0 (time limits)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def writable_dir(text: str) -> Path:
    """A folder that exists and is writable, or that can be created (its nearest existing parent is)."""
    path = Path(text).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a folder: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {text!r}: {str(probe)!r} is not writable")
    return path


def writable_file(text: str) -> Path:
    """A file path whose folder exists and is writable, or can be created; not an existing folder."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, expected a file name")
    writable_dir(str(path.parent))
    return path


def add_train_command(sub, group: str, group_help: str, train_help: str, add_arguments, run) -> None:
    """`tinytf GROUP train ...`: one subcommand group whose `train` calls run(args) and exits 0."""
    p = sub.add_parser(group, help=group_help)
    p_sub = p.add_subparsers(dest=group, metavar="WHAT", required=True)
    t = p_sub.add_parser("train", help=train_help)
    add_arguments(t)
    t.set_defaults(func=lambda args: (run(args), 0)[1])


__all__ = ["add_train_command", "positive_int", "nonnegative_int", "positive_float", "writable_dir", "writable_file"]
