"""The package's layering: each module imports only from its own layer or below, and no private names.

Layers, bottom to top: attention maths -> NNX layers -> models -> training / data ->
diagnostics / plots -> apps (CLI, lessons runner, benchmarks, recipes) and the grader.
Every import is checked, also those inside functions.
"""

import ast
import pathlib

import pytest

import tinytf

ROOT = pathlib.Path(tinytf.__file__).parent

LAYERS = [  # (layer number, module prefixes)
    (0, ["tinytf.checks", "tinytf.config", "tinytf.progress"]),
    (1, ["tinytf.attention", "tinytf.positional"]),
    (2, ["tinytf.capture", "tinytf.cache", "tinytf.variants", "tinytf.nn", "tinytf.variant_contract"]),
    (3, ["tinytf.models"]),
    (4, ["tinytf.data", "tinytf.detection", "tinytf.train"]),
    (5, ["tinytf.diagnostics", "tinytf.plots"]),
    (6, ["tinytf.apps", "tinytf.grading"]),
]


def layer_of(module: str) -> int:
    for number, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return number
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, package: str):
    """(imported module, [names]) for every import statement in the file, resolved to absolute names."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            yield base, [a.name for a in node.names]


MODULES = sorted(p for p in ROOT.rglob("*.py") if "reference" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_from_its_layer_or_below(path):
    name = module_name(path)
    if name == "tinytf" or name == "tinytf.__main__":
        return
    here = layer_of(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for module, names in imports(path, package):
        if not module.startswith("tinytf"):
            continue
        for target in [f"tinytf.{n}" for n in names] if module == "tinytf" else [module]:
            assert layer_of(target) <= here, f"{name} (layer {here}) imports {target} (layer {layer_of(target)})"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name} imports private names {private} from {module}: make them public or local"


def test_the_library_never_imports_the_apps_layer():
    for path in MODULES:
        name = module_name(path)
        if name.startswith(("tinytf.apps", "tinytf.grading")) or name in ("tinytf", "tinytf.__main__"):
            continue
        for module, _ in imports(path, name):
            assert not module.startswith(("tinytf.apps", "tinytf.grading")), f"{name} imports {module}"


def test_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: a model importing diagnostics is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from tinytf.diagnostics import sink_rate\n")
    (module, _), = list(imports(bad, "tinytf.models"))
    assert layer_of(module) > layer_of("tinytf.models.lm")
