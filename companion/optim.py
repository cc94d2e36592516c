"""Chapter 6's optimizer: clipping, then AdamW on a warmup-cosine schedule.

A frozen :class:`OptimizerConfig` names every setting; :func:`make_schedule` is its
learning rate, :func:`make_tx` the optax chain chapter 6 writes
(``optax.chain(optax.clip_by_global_norm(c), optax.adamw(schedule, weight_decay=wd))``),
and :func:`make_optimizer` the ``nnx.Optimizer`` over a model's ``nnx.Param`` s that
:func:`companion.nnx_training.fit` updates.

Examples:
    >>> import jax.numpy as jnp
    >>> tx = make_tx(OptimizerConfig(peak_lr=0.1, warmup_steps=0, total_steps=10))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, _ = tx.update({"w": jnp.full(3, 5.0)}, tx.init(params), params)
    >>> updates["w"].shape
    (3,)
"""

from __future__ import annotations

from dataclasses import dataclass

import optax
from flax import nnx

__all__ = ["OptimizerConfig", "make_optimizer", "make_schedule", "make_tx"]


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup, cosine decay and global-norm clipping."""

    peak_lr: float = 1e-3  # learning rate reached at the end of the warmup
    warmup_steps: int = 100  # linear ramp from 0 to peak_lr
    total_steps: int = 1000  # warmup + cosine decay; after it the rate stays at end_lr
    end_lr: float = 0.0  # learning rate at the end of the decay
    # AdamW's decoupled decay: θ ← θ − lr·wd·θ, not added to the gradient
    weight_decay: float = 1e-4
    clip_norm: float | None = 1.0  # rescale larger gradients to this norm (None: off)


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """The learning rate as a function of the step: linear warmup, then cosine decay.

    Examples:
        >>> cfg = OptimizerConfig(peak_lr=1.0, warmup_steps=10, total_steps=110)
        >>> s = make_schedule(cfg)
        >>> float(s(0)), float(s(5)), float(s(10)), float(s(60)), float(s(110))
        (0.0, 0.5, 1.0, 0.5, 0.0)
    """
    if not 0 <= cfg.warmup_steps < cfg.total_steps:
        raise ValueError(
            "need 0 <= warmup_steps < total_steps; "
            f"got {cfg.warmup_steps} and {cfg.total_steps}"
        )
    if cfg.peak_lr <= 0:
        raise ValueError(f"peak_lr must be positive; got {cfg.peak_lr}")
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.peak_lr, cfg.warmup_steps, cfg.total_steps, cfg.end_lr
    )


def make_tx(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw(schedule)``: AdamW sees the clipped gradient."""
    parts = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    parts.append(optax.adamw(make_schedule(cfg), weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


def make_optimizer(
    model: nnx.Module, cfg: OptimizerConfig | optax.GradientTransformation
) -> nnx.Optimizer:
    """An ``nnx.Optimizer`` over ``model``'s ``nnx.Param`` s, from a config or any optax
    transformation.

    ``wrt=nnx.Param`` says which variables the optimizer updates: the trainable
    parameters, not other state such as batch statistics or the metrics' counters.
    """
    if isinstance(cfg, OptimizerConfig):
        tx = make_tx(cfg)
    elif isinstance(cfg, optax.GradientTransformation):
        tx = cfg
    else:
        raise TypeError(
            "make_optimizer needs an OptimizerConfig or an optax transformation "
            f"(e.g. optax.sgd(0.1)); got {type(cfg).__name__}"
        )
    return nnx.Optimizer(model, tx, wrt=nnx.Param)
