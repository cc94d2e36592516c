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
- :mod:`companion.peers` — the same SGD epoch in numpy and PyTorch, the benchmark's
  peers (chapter 5)
- :mod:`companion.bench_mlp` — the MLP's epoch every way and its peers', timed; batch
  sizes (chapter 5)
- :mod:`companion.bench` — ``python -m companion.bench``: the benchmark tables
- :mod:`companion.cpu` — an opt-in CPU speed path: one group of a batch's rows per core
  (the benchmark)
- :mod:`companion.conv` — convolution by Winograd's products or patches × matrix,
  pooling as a reshape (chapter 6)
- :mod:`companion.nnx_models` — the MLP and a CNN as Flax NNX modules (chapter 6)
- :mod:`companion.optim` — an optimizer config, its optax transformation and
  ``nnx.Optimizer`` (chapter 6)
- :mod:`companion.nnx_steps` — NNX train and eval steps, the NaN guard (chapter 6)
- :mod:`companion.nnx_training` — ``fit`` and ``evaluate`` for NNX models (chapter 6)
- :mod:`companion.checkpoint` — orbax checkpoints of model and optimizer (chapter 6)
- :mod:`companion.bench_cnn` — the CNN's training steps timed, with PyTorch beside them
  (chapter 6)
- :mod:`companion.data_stats` — input statistics with warnings, the confusion matrix
  (chapter 8)
- :mod:`companion.diagnose` — any NNX model's layers, dead units, gradient norms,
  overfit one batch, a report (chapter 8)
- :mod:`companion.parallel` — meshes, sharded batches, data-parallel SGD steps (chapter
  7)
- :mod:`companion.torch_bridge` — weights between the book's JAX models and their
  PyTorch twins (appendix)
- :mod:`companion.plotting` — the book's figure style

``companion.bench`` is a command (``python -m companion.bench``), imported on its own,
not here. Importing the package imports none of its modules until they are used; none of
them imports torch on import (:mod:`companion.peers` and :mod:`companion.torch_bridge`
load it when their PyTorch functions are called, torchvision is loaded only when
:func:`companion.data.load_mnist` must download MNIST).
"""

import importlib
import types

# Submodules load on first use (PEP 562): `from companion import mlp` or `companion.mlp`
# imports mlp and what it needs (jax, numpy), not flax, optax, orbax or matplotlib.
_SUBMODULES = (
    "backprop",
    "batching",
    "bench_cnn",
    "bench_mlp",
    "checkpoint",
    "checks",
    "conv",
    "cpu",
    "data",
    "data_stats",
    "diagnose",
    "idx",
    "loop",
    "losses",
    "mlp",
    "nnx_models",
    "nnx_steps",
    "nnx_training",
    "optim",
    "parallel",
    "peers",
    "plotting",
    "sgd",
    "timing",
    "torch_bridge",
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
