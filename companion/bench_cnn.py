"""The CNN half of ``python -m companion.bench`` (``--model cnn``): seconds per epoch
of the book's CNN (chapter 6) trained with Adam, the companion's way and its peers'.

Variants, all from the same initial weights on the same batches:

- ``fit``: :func:`companion.nnx_training.fit`, the companion's fast path (many steps
  per compiled call, the second convolution by Winograd's products, NaN guard
  included);
- ``nnx.jit``: the four-line :func:`companion.nnx_steps.train_step` under ``nnx.jit``,
  one call per step;
- ``fit-patches``: ``fit`` with the second convolution as patches × matrix
  (``CNN(conv="patches")``), to show what Winograd's products are worth;
- ``fit-lax`` and ``nnx.jit-lax``: the same two with the textbook layers (``nnx.Conv``,
  i.e. ``lax.conv``; ``CNN(conv="lax")``), to show what the patches are worth;
- ``torch`` and ``torch.compile``: the same network and update in PyTorch
  (:func:`companion.torch_bridge.cnn_to_torch`, ``torch.optim.Adam``), eager and
  compiled.

A CNN epoch is long, so each variant times runs of ``steps`` steps (after one untimed
run: compilation), the variants in turns, and reports seconds per epoch as seconds per
step × ``N // batch_size``. The floor is :func:`cnn_step_flops` over the measured
matmul throughput.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from companion import nnx_steps, nnx_training, optim
from companion.batching import check_dataset, full_batches
from companion.bench import PAUSE, Row, import_torch
from companion.nnx_models import CNN
from companion.peers import torch_epoch
from companion.timing import interleave
from companion.torch_bridge import cnn_to_torch

__all__ = ["CNN_VARIANTS", "cnn_step_flops", "run_cnn"]

CNN_VARIANTS = (
    "fit",
    "nnx.jit",
    "fit-patches",
    "fit-lax",
    "nnx.jit-lax",
    "torch",
    "torch.compile",
)


def cnn_step_flops(batch_size: int) -> int:
    """Floating-point operations of one training step of the book's CNN.

    Per layer, a multiply-add per kernel tap per output: ``H·W·kh·kw·C_in·C_out`` for a
    convolution, ``n_in·n_out`` for a dense layer, 2 FLOPs each. The backward pass does
    that twice more (the gradients of the weights and of the input), except for the
    first layer, whose input needs no gradient. Pooling, ReLU and the loss are ignored
    (elementwise: small).

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
    (:func:`companion.timing.interleave`); a list of :class:`companion.bench.Row` in
    seconds per epoch of ``(x, y)``.

    Every run trains on the same first ``steps`` batches from where the last left off.
    The ``loss`` column is each variant's first (warm-up) run's mean loss: the same
    ``steps`` steps from the same weights, so it agrees to float32 rounding across the
    variants (a check that they compute the same thing; later runs drift apart as the
    roundings compound over hundreds of Adam steps). The torch variants are skipped,
    with a note on stderr, if torch is not installed.
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
            twin = cnn_to_torch(_cnn(init, "winograd"))
            opt = torch.optim.Adam(twin.parameters(), lr=lr)
            model = torch.compile(twin) if variant == "torch.compile" else twin
            x_t, y_t = torch.from_numpy(x[:n]), torch.from_numpy(y[:n].astype(np.int64))

            def run(model=model, opt=opt, x_t=x_t, y_t=y_t):
                return torch_epoch(model, x_t, y_t, lr, batch_size, optimizer=opt)

        else:
            form = variant.partition("-")[2] or "winograd"  # fit-lax: "lax"
            model = _cnn(init, form)
            opt = optim.make_optimizer(model, optax.adam(lr))
            run = (_fit_run if variant.startswith("fit") else _nnx_jit_run)(
                model, opt, x_dev, y_dev, batch_size
            )
        calls[variant] = run
    if not calls:  # only torch variants, and no torch
        return []
    losses: dict[str, list[float]] = {v: [] for v in calls}
    timed = interleave(
        {v: lambda r=r, out=losses[v]: out.append(r()) for v, r in calls.items()},
        warmup=1,
        repeat=repeat,
        pause=PAUSE,
    )
    per_step = per_epoch / steps  # seconds per run → seconds per epoch
    return [
        # the warm-up run's loss: every variant's first steps from the same weights, so
        # the losses agree to float32 rounding; later runs drift apart, as rounding
        # differences compound over hundreds of Adam steps
        Row(v, tuple(t * per_step for t in timed[v].times), losses[v][0])
        for v in calls
    ]


def _cnn(params: nnx.State, conv: str) -> CNN:
    model = CNN(rngs=nnx.Rngs(0), conv=conv)
    nnx.update(model, jax.tree.map(jnp.array, params))  # a copy: training donates it
    return model


def _fit_run(model, optimizer, x, y, batch_size):
    done = [0]

    def run():
        h = nnx_training.fit(
            model,
            optimizer,
            x,
            y,
            epochs=done[0] + 1,
            start_epoch=done[0],
            batch_size=batch_size,
            progress=False,
        )
        done[0] += 1
        return h.loss[-1]

    return run


@nnx.jit
def _jit_step(model, optimizer, metrics, x, y):
    nnx_steps.train_step(model, optimizer, metrics, x, y)


def _nnx_jit_run(model, optimizer, x, y, batch_size):
    metrics = nnx_steps.make_metrics()

    def run():
        for i in range(len(y) // batch_size):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            _jit_step(model, optimizer, metrics, x[batch], y[batch])
        loss = float(metrics.compute()["loss"])  # waits for the last step
        metrics.reset()
        return loss

    return run
