import jax.numpy as jnp
import numpy as np
import optax
import pytest

from companion import optim
from companion.optim import OptimizerConfig


def test_schedule_values_against_the_formula():
    cfg = OptimizerConfig(peak_lr=3e-3, warmup_steps=20, total_steps=220, end_lr=1e-4)
    schedule = optim.make_schedule(cfg)
    for t in [0, 5, 19, 20, 21, 100, 219, 220, 500]:
        if t < 20:
            expected = 3e-3 * t / 20
        else:
            progress = min(t - 20, 200) / 200
            expected = 1e-4 + (3e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * progress))
        assert float(schedule(t)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        optim.make_schedule(OptimizerConfig(warmup_steps=10, total_steps=10))


def test_optimizer_matches_numpy_adamw_with_clipping():
    # no warmup: every compared step has a non-zero learning rate (a step at lr 0 would
    # test nothing)
    cfg = OptimizerConfig(
        peak_lr=0.1, warmup_steps=0, total_steps=10, weight_decay=0.01, clip_norm=0.5
    )
    tx = optim.make_tx(cfg)
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    state = tx.init(params)
    p = np.array([1.0, -2.0, 3.0])
    m = v = np.zeros(3)
    grads = [
        np.array([0.3, -0.4, 1.2]),
        np.array([-0.1, 0.2, 0.05]),
        np.array([2.0, 0.1, -0.3]),
    ]
    for t, g in enumerate(grads, start=1):
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        g = g * min(1.0, 0.5 / np.linalg.norm(g))  # clip by global norm
        lr = 0.05 + 0.05 * np.cos(
            np.pi * (t - 1) / 10
        )  # cosine decay from 0.1 over 10 steps
        assert lr > 0.05
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        p = p - lr * (mhat / (np.sqrt(vhat) + 1e-8) + 0.01 * p)
        np.testing.assert_allclose(params["w"], p, rtol=1e-5, atol=1e-7)


def test_make_optimizer_takes_a_config_or_a_transformation_and_nothing_else():
    from flax import nnx

    from companion.nnx_models import MLP

    model = MLP([3, 2], rngs=nnx.Rngs(0))
    assert isinstance(optim.make_optimizer(model, optax.sgd(0.1)), nnx.Optimizer)
    assert isinstance(optim.make_optimizer(model, OptimizerConfig()), nnx.Optimizer)
    with pytest.raises(
        TypeError, match=r"OptimizerConfig or an optax transformation.*float"
    ):
        optim.make_optimizer(model, 0.1)
