"""companion: the code the book *Training neural networks with JAX* builds, chapter by chapter.

Small flat modules, one concept each (see the book's introduction for the chapter map):

- :mod:`companion.checks` — input validation at the eager boundary
- :mod:`companion.data` — MNIST loading and minibatches (chapter 2)
- :mod:`companion.mlp` — MLP parameters, forward pass, accuracy (chapter 2)
- :mod:`companion.losses` — stable softmax, cross-entropy, MSE, L2 (chapter 3)
- :mod:`companion.backprop` — the backward pass by hand, finite differences (chapter 4)
- :mod:`companion.plotting` — the book's figure style

Importing the package does not import torch: torchvision is loaded only by
:func:`companion.data.load_mnist`.
"""

from companion import backprop, checks, data, losses, mlp, plotting

__all__ = ["backprop", "checks", "data", "losses", "mlp", "plotting"]
__version__ = "0.1.0"
