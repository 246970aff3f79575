"""Is a submitted function the reference solution with its names changed?

A tripwire for instructors, not a plagiarism detector: each function is parsed,
its docstring and annotations dropped (comments and formatting never reach the
AST), numpy and jax.numpy aliases made one name, and every other identifier
(arguments, locals, helpers) renamed in order of first appearance. Two functions
whose normalised trees are equal are the same code. Reordered statements or
rewritten expressions defeat it; very short functions (a one-line reshape) are
too common to flag, so only functions of at least `MIN_NODES` AST nodes count
(Load/Store markers included: `merge_heads`, a reshape, has 44; `split_heads` 65).
"""

from __future__ import annotations

import ast
import builtins
import functools
import threading
import time
from types import MappingProxyType

MIN_NODES = 60
# CPython 3.11 keeps the AST constructor's recursion counter in one per-interpreter
# state; two threads building trees at once can trip "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905). Grading runs exercises on threads.
_PARSE_LOCK = threading.Lock()
_ARRAY_MODULES = {"numpy", "jax.numpy"}
_BUILTINS = set(dir(builtins))


def _array_aliases(tree: ast.Module) -> set[str]:
    """Names bound to numpy or jax.numpy by the module's imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in _ARRAY_MODULES:
                    names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module == "jax":
            names |= {a.asname or a.name for a in node.names if a.name == "numpy"}
    return names


class _Normaliser(ast.NodeTransformer):
    def __init__(self, aliases: set[str]):
        self.aliases = aliases
        self.names: dict[str, str] = {}

    def rename(self, name: str) -> str:
        if name in self.aliases:
            return "ARRAY"
        if name in _BUILTINS:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_FunctionDef(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:] or [ast.Pass()]
        node.body = body
        node.returns = None
        node.decorator_list = []
        node.name = self.rename(node.name)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arg(self, node):
        node.arg = self.rename(node.arg)
        node.annotation = None
        return node

    def visit_Name(self, node):
        node.id = self.rename(node.id)
        return node


def parse_python(source: str | bytes) -> ast.Module | None:
    """ast.parse, one thread at a time; None for source that does not parse.

    The lock covers our own parses, not an ast.parse elsewhere in the process (Python 3.11's
    traceback formatting parses source lines), which can still trip the SystemError above (a
    clean CI run did); it is transient, so we parse again."""
    with _PARSE_LOCK:
        for attempt in range(5):
            try:
                return ast.parse(source)
            except (SyntaxError, ValueError):
                return None
            except SystemError:
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))


def normalised_functions(source: str | bytes) -> dict[str, tuple[str, int]]:
    """Top-level function name -> (normalised dump, number of AST nodes); {} when it does not parse."""
    return dict(_normalised(source))


@functools.lru_cache(maxsize=256)  # a reference is compared with every submitted file; parse it once
def _normalised(source: str | bytes) -> MappingProxyType:
    tree = parse_python(source)
    if tree is None:
        return MappingProxyType({})
    aliases = _array_aliases(tree)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = node.name
            clean = _Normaliser(aliases).visit(node)
            size = sum(1 for _ in ast.walk(clean))
            out[name] = (ast.dump(clean, annotate_fields=False, include_attributes=False), size)
    return MappingProxyType(out)


def copied_functions(submission: str | bytes, reference: str) -> list[tuple[str, str]]:
    """(submitted function, reference function) pairs that are the same code after renaming."""
    mine, ref = _normalised(submission), _normalised(reference)
    ref_by_dump = {dump: name for name, (dump, size) in ref.items() if size >= MIN_NODES}
    return [(name, ref_by_dump[dump]) for name, (dump, _) in mine.items() if dump in ref_by_dump]
