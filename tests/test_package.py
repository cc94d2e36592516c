import subprocess
import sys

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


def test_import_companion_does_not_import_torch():
    # every module, companion.peers included: it imports torch only when its PyTorch
    # functions are called
    code = (
        "import sys, companion; [getattr(companion, m) for m in companion.__all__]; "
        "print('torch' in sys.modules)"
    )
    assert _python(code) == "False"


def test_the_early_chapters_modules_load_no_training_libraries():
    # chapters 2-4 start with these: they must not pay for flax, optax, orbax,
    # matplotlib or torch
    heavy = ("flax", "optax", "orbax", "matplotlib", "torch", "torchvision")
    for module in ("mlp", "data", "losses", "backprop"):
        assert _loaded(module, heavy) == "[]", module


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
    # `python -m` entry points, not part of the import surface
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
