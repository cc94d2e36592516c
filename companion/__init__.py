"""companion: the code the book *Training neural networks with JAX* builds, chapter by
chapter.

Small flat modules, one concept each (see the book's introduction for the chapter map):

- :mod:`companion.checks` — input validation at the eager boundary
- :mod:`companion.idx` — reading MNIST's IDX file format with numpy (chapter 2)
- :mod:`companion.data` — finding and loading MNIST, validated once (chapter 2)
- :mod:`companion.batching` — validating, shuffling and batching a dataset (chapter 2)
- :mod:`companion.mlp` — MLP parameters, forward pass, accuracy (chapter 2)
- :mod:`companion.losses` — stable softmax, cross-entropy, MSE, L2 (chapter 3)
- :mod:`companion.backprop` — the backward pass by hand, finite differences (chapter 4)
- :mod:`companion.loop` — the epoch loop both ``fit`` s share: keys, history, progress,
  NaN check (chapter 5)
- :mod:`companion.sgd` — the SGD step and epoch, three ways: eager, jit, scan (chapter
  5)
- :mod:`companion.training` — ``fit`` and ``evaluate`` for the MLP (chapter 5)
- :mod:`companion.timing` — benchmarks with warm-up and ``block_until_ready`` (chapter
  5)
- :mod:`companion.nnx_models` — the MLP and a CNN as Flax NNX modules (chapter 6)
- :mod:`companion.optim` — an optimizer config, its optax transformation and
  ``nnx.Optimizer`` (chapter 6)
- :mod:`companion.nnx_steps` — NNX train and eval steps, the NaN guard (chapter 6)
- :mod:`companion.nnx_training` — ``fit`` and ``evaluate`` for NNX models (chapter 6)
- :mod:`companion.checkpoint` — orbax checkpoints of model and optimizer (chapter 6)
- :mod:`companion.parallel` — meshes, sharded batches, data-parallel SGD steps (chapter
  7)
- :mod:`companion.data_stats` — input statistics with warnings, the confusion matrix
  (chapter 8)
- :mod:`companion.intercept` — a model's layer outputs, recorded during a call (chapter
  8)
- :mod:`companion.diagnose` — any NNX model's layers, dead units, gradient norms,
  overfit one batch, a report (chapter 8)
- :mod:`companion.torch_layouts` — how PyTorch and JAX lay out the same weights, and
  the conversions (appendix)
- :mod:`companion.torch_bridge` — weights between the book's JAX models and their
  PyTorch twins (appendix)
- :mod:`companion.fast` — a subpackage: the opt-in CPU speed paths (row groups per
  core, Winograd, patches and shifted taps, a many-steps-per-call NNX loop), measured by
  the performance appendix; nothing that runs by default uses them
- :mod:`companion.plotting` — the book's figure style

Two commands, imported on their own, not here: ``python -m companion.bench`` (the
subpackage :mod:`companion.bench`: the benchmark tables, the performance appendix's
measurements; nothing else imports it) and ``python -m companion.startup``. Importing
the package imports none of its modules until they are used (``companion.fast`` loads
its package, not its modules: ``from companion.fast import rows``); none of them
imports torch on import (:mod:`companion.torch_bridge` and
:mod:`companion.bench.peers` load it when their PyTorch functions are called,
torchvision is loaded only when :func:`companion.data.load_mnist` must download MNIST).
"""

import importlib
import types

# Submodules load on first use (PEP 562): `from companion import mlp` or `companion.mlp`
# imports mlp and what it needs (jax, numpy), not flax, optax, orbax or matplotlib.
_SUBMODULES = (
    "backprop",
    "batching",
    "checkpoint",
    "checks",
    "data",
    "data_stats",
    "diagnose",
    "fast",
    "idx",
    "intercept",
    "loop",
    "losses",
    "mlp",
    "nnx_models",
    "nnx_steps",
    "nnx_training",
    "optim",
    "parallel",
    "plotting",
    "sgd",
    "timing",
    "torch_bridge",
    "torch_layouts",
    "training",
)

__all__ = list(_SUBMODULES)
__version__ = "0.1.0"


def __getattr__(name: str) -> types.ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(
            f"companion.{name}"
        )  # also binds it in this namespace
    raise AttributeError(f"module 'companion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
