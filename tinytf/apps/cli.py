"""The ``tinytf`` command line.

Each subsystem adds its own subcommands through a ``register_cli(subparsers)``
function, so this file stays a table of contents:

  tinytf demo                      attention heatmap of a tiny model -> PNG
  tinytf bench attention|train     speed and memory against named peers
  tinytf compare VARIANT ...       every phenomenon, attention variants side by side
  tinytf detr train                train and evaluate the DETR preset (see detr_recipe.py)
  tinytf lessons / lesson ID       the lessons (see lessons.py)
  tinytf course build              the course as a static web site (see course.py)
  tinytf exercises list|init DIR   the student exercises (see grading.py)
  tinytf grade [DIR]               the autograder
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

# (module, what it adds). A module that is missing is skipped, so the CLI works
# while parts of the package are still being written.
_SUBSYSTEMS = (
    "tinytf.apps.demo",
    "tinytf.apps.bench",
    "tinytf.apps.compare",
    "tinytf.apps.detr_recipe",
    "tinytf.apps.scale",
    "tinytf.apps.lessons",
    "tinytf.apps.course",
    "tinytf.grading",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinytf",
        description="tinytf: see attention fail in small transformers, then fix it.",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or status lines (also: TINYTF_QUIET=1)")
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBSYSTEMS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency inside the module
                raise
            continue
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    _quiet_everywhere(sub)
    return parser


def _quiet_everywhere(sub) -> None:
    """Let `--quiet` also follow any subcommand (`tinytf lesson ID --quiet`), not only precede it."""
    for command in sub.choices.values():
        if "--quiet" not in command._option_string_actions:
            # SUPPRESS: absent, it leaves the global flag's value alone
            command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                                 help="no progress bars or status lines (also: TINYTF_QUIET=1)")
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _quiet_everywhere(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["tinytf", *(sys.argv[1:] if argv is None else argv)])  # for metrics.json
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from tinytf.config import enable_compilation_cache
    from tinytf.progress import quiet

    enable_compilation_cache(not args.no_compilation_cache)
    try:
        with quiet(args.quiet):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # `tinytf ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
