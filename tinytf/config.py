"""Process-wide settings: JAX's persistent compilation cache.

XLA takes 4-6 s to compile each new model configuration on a 2-core CPU. The
persistent cache stores compiled executables on disk, so a second process that
builds the same model starts in a fraction of that (measured 16.5 s -> 6 s for a
first training step). The CLI, the lessons and the tests turn it on; set
``TINYTF_NO_COMPILATION_CACHE=1`` (or call ``enable_compilation_cache(False)``)
to turn it off, ``TINYTF_CACHE_DIR`` to move it, and ``TINYTF_CACHE_MIN_COMPILE_S`` to change
which programs it keeps (those that took at least that long to compile; default 0.01 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from tinytf.checks import check_number

_DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tinytf" / "jax"


def enable_compilation_cache(enable: bool = True, path: str | os.PathLike | None = None, *,
                             min_compile_time_s: float | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on (default) or off.

    Args:
      enable: False turns the cache off for this process.
      path: cache directory; defaults to ``$TINYTF_CACHE_DIR`` or
        ``~/.cache/tinytf/jax``.
      min_compile_time_s: keep only programs that took at least this long to compile;
        defaults to ``$TINYTF_CACHE_MIN_COMPILE_S`` or 0.01 s.

    Returns:
      The directory in use, or None when the cache is off (by argument or by
      ``TINYTF_NO_COMPILATION_CACHE=1``).
    """
    if min_compile_time_s is None:
        text = os.environ.get("TINYTF_CACHE_MIN_COMPILE_S", "").strip() or "0.01"
        try:
            min_compile_time_s = float(text)
        except ValueError:
            raise ValueError(f"$TINYTF_CACHE_MIN_COMPILE_S must be a number of seconds, got {text!r}") from None
    min_compile_time_s = check_number("min_compile_time_s", min_compile_time_s, low=0.0)
    if not enable or os.environ.get("TINYTF_NO_COMPILATION_CACHE", "") not in ("", "0"):
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = Path(path or os.environ.get("TINYTF_CACHE_DIR", _DEFAULT_DIR)).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: run without a cache rather than fail
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Cache every program that took >= 10 ms to compile: the training step, and also the eager
    # ops a model's construction and a lesson's measurements run (each compiles in 10-50 ms, and a
    # lesson runs dozens). Measured on a 2-core box (fresh cache per threshold; cold / warm runs):
    # attention-sinks --quick 0.1 s -> 37 entries, 37.5 s / 19.3-20.3 s; 0.01 s -> 144 entries,
    # 37.6 s / 17.5 s; 0 -> 178 entries, 37.7 s / 17.2-17.9 s. detr-queries warm, alternating runs:
    # 0.1 s 23.4-23.9 s, 0.01 s 22.4-22.8 s. (An earlier box with a slow disk made writing the
    # extra entries cost up to 30 s cold; on this one the cold runs did not change.)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
