"""``python -m companion.bench --model cnn``: the book's CNN timed, and the fast path.

Seconds per epoch of chapter 6's CNN trained with Adam: the companion's way, an opt-in
fast path for XLA:CPU, and PyTorch.

Variants, all from the same initial weights on the same batches:

- ``fit``: :func:`companion.nnx_training.fit` on the default (textbook) ``CNN``;
- ``nnx.jit``: chapter 6's :func:`companion.nnx_steps.train_step` under ``nnx.jit``,
  one call per step;
- ``fast``, ``fast-patches``, ``fast-lax``: :func:`fast_fit`, the opt-in XLA:CPU
  speed path defined here, on ``CNN(conv="winograd")``, ``CNN(conv="patches")`` and
  the textbook ``CNN``;
- ``torch`` and ``torch.compile``: the same network and update in PyTorch
  (:func:`companion.torch_bridge.cnn_to_torch`, ``torch.optim.Adam``).

**The fast path** (:func:`fast_fit`): ``nnx.split`` the model, optimizer, metrics and
NaN guard once; run many steps per compiled call in one ``lax.scan`` (a plain
``jax.jit`` of the state, donated); run each batch as one group of rows per core
(independent products XLA:CPU runs at the same time). Inside a loop, XLA:CPU computes
``lax.conv``'s kernel gradient slowly, so a model holding an ``nnx.Conv`` other than
:class:`companion.conv.FastConv` takes one step per call there (:func:`loops_well`).
None of it is used by :mod:`companion.nnx_training`; it trains the same network to
float32 rounding.

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

from companion import cpu, nnx_steps, nnx_training, optim
from companion.batching import check_dataset, full_batches, shuffle
from companion.bench import PAUSE, Row, import_torch
from companion.conv import FastConv
from companion.loop import EpochStats, History, diverged, run
from companion.nnx_models import CNN
from companion.peers import torch_epoch
from companion.timing import interleave
from companion.torch_bridge import cnn_to_torch

__all__ = [
    "CNN_VARIANTS",
    "cnn_step_flops",
    "fast_fit",
    "grouped_loss_fn",
    "loops_well",
    "run_cnn",
]

CNN_VARIANTS = (
    "fit",
    "nnx.jit",
    "fast",
    "fast-patches",
    "fast-lax",
    "torch",
    "torch.compile",
)
_FORMS = {"fast": "winograd", "fast-patches": "patches", "fast-lax": "lax"}


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


# --- the opt-in fast path for XLA:CPU ------------------------------------------------


def grouped_loss_fn(groups: int) -> nnx_steps.LossFn:
    """:func:`companion.nnx_steps.loss_fn` computed on ``groups`` equal groups of rows,
    one model call each: the same loss for a model that treats examples independently
    (not one that mixes them, as batch normalisation does). ``groups`` must divide the
    batch.
    """

    def loss(model, x, y):
        parts = cpu.row_groups(x.shape[0], groups)
        outs = [nnx_steps.loss_fn(model, x[p], y[p]) for p in parts]
        total = sum(value for value, _ in outs) / len(parts)  # equal groups
        return total, jnp.concatenate([logits for _, logits in outs])

    return loss


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7, 8), donate_argnums=2)
def _fast_train_steps(graphdef, treedef, leaves, xs, ys, first, count, batch, groups):
    # Steps first .. first + count - 1 of the epoch in one call (a lax.scan over the
    # batch index). The state travels as a flat list of arrays: jit's C++ dispatch
    # handles a list at full speed.
    def step(leaves, i):
        objects = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        x = jax.lax.dynamic_slice_in_dim(xs, i * batch, batch)  # on the device
        y = jax.lax.dynamic_slice_in_dim(ys, i * batch, batch)
        nnx_steps.guarded_train_step(*objects, x, y, grouped_loss_fn(groups))
        return jax.tree.leaves(nnx.state(objects)), None

    if count == 1:
        return step(leaves, first)[0]
    return jax.lax.scan(step, leaves, first + jnp.arange(count))[0]


def loops_well(model: nnx.Module) -> bool:
    """Whether many steps of ``model`` can run in one ``lax.scan`` at full speed: False
    on the CPU backend for a model holding an ``nnx.Conv`` (or ``ConvTranspose``) other
    than :class:`companion.conv.FastConv`.
    """
    if jax.default_backend() != "cpu":
        return True
    return not any(
        isinstance(node, (nnx.Conv, nnx.ConvTranspose))
        and not isinstance(node, FastConv)
        for _, node in nnx.iter_graph(model)
    )


def fast_fit(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    start_epoch: int = 0,
    key: jax.Array | None = None,
    steps_per_call: int | None = None,
    groups: int | None = None,
) -> History:
    """Train like :func:`companion.nnx_training.fit` (the guarded step, the same
    batches, no validation or checkpoints), through the fast path.

    Args:
        model, optimizer: updated in place; x ``(N, ...)``, y ``(N,)``, validated.
        epochs, batch_size, start_epoch, key: as for ``nnx_training.fit``.
        steps_per_call: steps per compiled call (``None``: 50, or 1 for a model that
            does not loop well here, :func:`loops_well`).
        groups: row groups per batch (``None``: one per core on a CPU,
            :func:`companion.cpu.batch_groups`; 1 for a model with ``nnx.BatchNorm``).
    """
    if steps_per_call is None:
        steps_per_call = 50 if loops_well(model) else 1
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be at least 1; got {steps_per_call}")
    if groups is None:
        mixes = any(isinstance(n, nnx.BatchNorm) for _, n in nnx.iter_graph(model))
        groups = 1 if mixes else cpu.batch_groups(batch_size)
    cpu.row_groups(batch_size, groups)  # checks that groups divides the batch
    nnx_training._validate(x, y, model)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    steps = full_batches(len(y_dev), batch_size)
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    objects = (model, optimizer, metrics, guard)

    def one_epoch(epoch, key, bar):
        xs, ys = (x_dev, y_dev) if key is None else shuffle(key, x_dev, y_dev)
        graphdef, state = nnx.split(objects)
        leaves, treedef = jax.tree.flatten(state)
        for first in range(0, steps, steps_per_call):
            count = min(steps_per_call, steps - first)
            leaves = _fast_train_steps(
                graphdef, treedef, leaves, xs, ys, first, count, batch_size, groups
            )
        nnx.update(objects, jax.tree.unflatten(treedef, leaves))
        if (bad := int(guard.first_bad_step[...])) >= 0:
            raise diverged(epoch, "non-finite", where=f"at optimizer step {bad}")
        stats = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        return EpochStats(stats["loss"], stats["accuracy"], stats["grad_norm"])

    return run(
        one_epoch,
        epochs=epochs,
        steps_per_epoch=steps,
        start_epoch=start_epoch,
        key=key,
        progress=False,
    )


# --- the benchmark -------------------------------------------------------------------


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
            twin = cnn_to_torch(_cnn(init, "lax"))
            opt = torch.optim.Adam(twin.parameters(), lr=lr)
            model = torch.compile(twin) if variant == "torch.compile" else twin
            x_t, y_t = torch.from_numpy(x[:n]), torch.from_numpy(y[:n].astype(np.int64))

            def call(model=model, opt=opt, x_t=x_t, y_t=y_t):
                return torch_epoch(model, x_t, y_t, lr, batch_size, optimizer=opt)

        else:
            model = _cnn(init, _FORMS.get(variant, "lax"))
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


def _cnn(params: nnx.State, conv: str) -> CNN:
    model = CNN(rngs=nnx.Rngs(0), conv=conv)
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
