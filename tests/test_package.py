import ast
import subprocess
import sys
from pathlib import Path

import pytest

import companion

LIGHT = (
    "import sys; from companion import {module}; "
    "print(sorted(m for m in {heavy!r} if m in sys.modules))"
)


def _python(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter (nothing imported yet)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _loaded(module: str, heavy: tuple[str, ...]) -> str:
    return _python(LIGHT.format(module=module, heavy=heavy))


@pytest.mark.imports
def test_import_companion_does_not_import_torch():
    # every module offered here, companion.torch_bridge included: it imports torch only
    # when its functions are called (every module of the subpackages: below)
    code = (
        "import sys, companion; [getattr(companion, m) for m in companion.__all__]; "
        "print('torch' in sys.modules)"
    )
    assert _python(code) == "False"


@pytest.mark.imports
def test_the_early_chapters_modules_load_no_training_libraries():
    # chapters 2-4 start with these: they must not pay for flax, optax, orbax,
    # matplotlib or torch
    heavy = ("flax", "optax", "orbax", "matplotlib", "torch", "torchvision")
    for module in ("mlp", "data", "losses", "backprop"):
        assert _loaded(module, heavy) == "[]", module


@pytest.mark.imports
def test_submodules_load_on_first_use():
    code = (
        "import sys, companion; before = 'companion.nnx_models' in sys.modules; "
        "m = companion.nnx_models; "
        "print(before, m is sys.modules['companion.nnx_models'])"
    )
    assert _python(code) == "False True"


def test_every_listed_module_is_importable_and_nothing_else_is_offered():
    import importlib
    import pkgutil

    on_disk = {m.name for m in pkgutil.iter_modules(companion.__path__)}
    # `python -m` entry points, not part of the import surface (bench: a subpackage,
    # its command companion/bench/__main__.py); fast: a subpackage, offered
    commands = {"bench", "startup"}
    assert set(companion.__all__) == on_disk - commands
    for name in companion.__all__:
        assert getattr(companion, name) is importlib.import_module(f"companion.{name}")
    try:
        companion.no_such_module  # noqa: B018
    except AttributeError as e:
        assert "no_such_module" in str(e)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


# --- the import graph: one way down, the benchmarks on top ---------------------------

PACKAGE = Path(companion.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name, subpackages included."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (in functions too,
    and under TYPE_CHECKING): for ``from a.b import c``, ``a.b.c`` if it is a module,
    else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_import_cycle_anywhere_in_the_package():
    graph = _graph()
    assert "companion.bench.tables" in graph and "companion.fast.rows" in graph
    state: dict[str, str] = {}  # "open" while on the path, then "done"

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycle = [*path[path.index(dep) :], dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_only_the_benchmarks_import_the_benchmarks_and_the_fast_paths():
    # companion.bench sits on top: nothing outside it imports it. companion.fast is
    # opt-in: only the benchmarks (and the fast paths themselves) import it.
    for name, deps in _graph().items():
        if not name.startswith("companion.bench"):
            assert not {d for d in deps if d.startswith("companion.bench")}, name
        if not name.startswith(("companion.bench", "companion.fast")):
            assert not {d for d in deps if d.startswith("companion.fast")}, name


def test_every_module_imports_first_and_on_its_own():
    # In a fresh interpreter, each module imported with no companion module loaded
    # before it (they are unloaded after each; jax, flax stay): an import cycle through
    # module-level imports, or a module that works only once another is loaded, fails
    # here, whichever module comes first. And none of them loads torch.
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] == 'companion']:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "print('torch' in sys.modules)\n"
    )
    names = sorted(_modules())
    assert "companion.bench.__main__" in names and "companion.fast.conv" in names
    out = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
