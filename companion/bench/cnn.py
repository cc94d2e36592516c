"""The CNN half of ``python -m companion.bench --model cnn`` (chapter 6): seconds per
epoch of chapter 6's CNN trained with Adam, the companion's way, through the opt-in CPU
speed path (:mod:`companion.fast`), and in PyTorch.

Variants, all from the same initial weights on the same batches:

- ``fit``: :func:`companion.nnx_training.fit` on the chapter's ``CNN``;
- ``nnx.jit``: chapter 6's :func:`companion.nnx_steps.train_step` under ``nnx.jit``,
  one call per step;
- ``fast``, ``fast-patches``, ``fast-lax``: :func:`companion.fast.nnx_loop.fast_fit`
  (many steps per compiled call, row groups) on
  :func:`companion.fast.conv.fast_cnn` (Winograd's products; patches × matrix) and on
  the chapter's ``CNN`` (``lax.conv``);
- ``torch`` and ``torch.compile``: the same network and update in PyTorch
  (:func:`companion.torch_bridge.cnn_to_torch`, ``torch.optim.Adam``).

A CNN epoch is long, so each variant times runs of ``steps`` steps (after one untimed
run: compilation), the variants in turns, and reports seconds per epoch as seconds per
step × ``N // batch_size``. The floor is :func:`cnn_step_flops` over the measured
matmul throughput.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from companion import nnx_steps, nnx_training, optim
from companion.batching import check_dataset, full_batches
from companion.bench.peers import torch_epoch
from companion.bench.tables import PAUSE, Row, import_torch
from companion.fast.conv import fast_cnn
from companion.fast.nnx_loop import fast_fit
from companion.nnx_models import CNN
from companion.timing import interleave
from companion.torch_bridge import cnn_to_torch

__all__ = ["CNN_VARIANTS", "cnn_step_flops", "run_cnn"]

CNN_VARIANTS = (
    "fit",
    "nnx.jit",
    "fast",
    "fast-patches",
    "fast-lax",
    "torch",
    "torch.compile",
)
# the model each NNX variant trains: chapter 6's CNN, or fast_cnn's convolutions
_MODELS = {
    "fast": lambda rngs: fast_cnn(rngs=rngs),
    "fast-patches": lambda rngs: fast_cnn(rngs=rngs, winograd=False),
}


def cnn_step_flops(batch_size: int) -> int:
    """Floating-point operations of one training step of the book's CNN.

    Per layer, a multiply-add per kernel tap per output: ``H·W·kh·kw·C_in·C_out`` for a
    convolution, ``n_in·n_out`` for a dense layer, 2 FLOPs each. The backward pass does
    that twice more (the gradients of the weights and of the input), except for the
    first layer, whose input needs no gradient. Pooling, ReLU and the loss are ignored.

    Examples:
        >>> cnn_step_flops(1)  # ≈ 27 MFLOP per example
        27411456
    """
    layers = [  # multiply-adds per example, forward
        28 * 28 * 3 * 3 * 1 * 32,  # conv1
        14 * 14 * 3 * 3 * 32 * 64,  # conv2
        7 * 7 * 64 * 256,  # dense1
        256 * 10,  # dense2
    ]
    macs = sum(3 * m for m in layers) - layers[0]
    return 2 * macs * batch_size


def run_cnn(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 64,
    steps: int = 50,
    repeat: int = 3,
    lr: float = 1e-3,
    variants: Sequence[str] = CNN_VARIANTS,
    seed: int = 0,
) -> list[Row]:
    """Time each CNN variant: ``steps`` Adam steps a run, one untimed run of each, then
    ``repeat`` rounds of one timed run of each, in turns
    (:func:`companion.timing.interleave`); a list of
    :class:`companion.bench.tables.Row` in seconds per epoch of ``(x, y)``.

    Every run trains on the same first ``steps`` batches from where the last left off.
    The ``loss`` column is each variant's first (warm-up) run's mean loss: the same
    steps from the same weights, so it agrees to float32 rounding across the variants.
    The torch variants are skipped, with a note on stderr, without torch.
    """
    unknown = set(variants) - set(CNN_VARIANTS)
    if unknown:
        raise ValueError(
            f"unknown variants {sorted(unknown)}; choose from {list(CNN_VARIANTS)}"
        )
    if steps < 1 or repeat < 1:
        raise ValueError(f"steps and repeat must be positive; got {steps}, {repeat}")
    check_dataset(x, y, num_classes=10)
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    if x.shape[1] != 784:
        raise ValueError(f"the CNN takes 28×28 images; got x of shape {x.shape}")
    per_epoch = full_batches(len(y), batch_size)
    if steps > per_epoch:
        raise ValueError(
            f"steps ({steps}) is more than an epoch of {per_epoch} batches of "
            f"{batch_size}"
        )
    n = steps * batch_size
    x_dev, y_dev = jnp.asarray(x[:n]), jnp.asarray(y[:n])
    init = nnx.state(CNN(rngs=nnx.Rngs(seed)), nnx.Param)
    calls = {}
    for variant in variants:
        if variant.startswith("torch"):
            torch = import_torch(variant)
            if torch is None:
                continue
            twin = cnn_to_torch(_cnn(init, variant))
            opt = torch.optim.Adam(twin.parameters(), lr=lr)
            model = torch.compile(twin) if variant == "torch.compile" else twin
            x_t, y_t = torch.from_numpy(x[:n]), torch.from_numpy(y[:n].astype(np.int64))

            def call(model=model, opt=opt, x_t=x_t, y_t=y_t):
                return torch_epoch(model, x_t, y_t, lr, batch_size, optimizer=opt)

        else:
            model = _cnn(init, variant)
            opt = optim.make_optimizer(model, optax.adam(lr))
            runner = _nnx_jit_run if variant == "nnx.jit" else _fit_run
            call = runner(model, opt, x_dev, y_dev, batch_size, variant != "fit")
        calls[variant] = call
    if not calls:  # only torch variants, and no torch
        return []
    losses: dict[str, list[float]] = {v: [] for v in calls}
    timed = interleave(
        {v: lambda c=c, out=losses[v]: out.append(c()) for v, c in calls.items()},
        warmup=1,
        repeat=repeat,
        pause=PAUSE,
    )
    per_step = per_epoch / steps  # seconds per run → seconds per epoch
    return [
        Row(v, tuple(t * per_step for t in timed[v].times), losses[v][0]) for v in calls
    ]


def _cnn(params: nnx.State, variant: str) -> CNN:
    model = _MODELS.get(variant, lambda rngs: CNN(rngs=rngs))(nnx.Rngs(0))
    nnx.update(model, jax.tree.map(jnp.array, params))  # a copy: training donates it
    return model


def _fit_run(model, optimizer, x, y, batch_size, fast):
    done = [0]
    train = fast_fit if fast else functools.partial(nnx_training.fit, progress=False)

    def call():
        h = train(
            model,
            optimizer,
            x,
            y,
            epochs=done[0] + 1,
            start_epoch=done[0],
            batch_size=batch_size,
        )
        done[0] += 1
        return h.loss[-1]

    return call


_jit_step = nnx.jit(nnx_steps.train_step)


def _nnx_jit_run(model, optimizer, x, y, batch_size, _):
    metrics = nnx_steps.make_metrics()

    def call():
        for i in range(len(y) // batch_size):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            _jit_step(model, optimizer, metrics, x[batch], y[batch])
        loss = float(metrics.compute()["loss"])  # waits for the last step
        metrics.reset()
        return loss

    return call
