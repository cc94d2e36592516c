import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from companion import mlp
from companion.backprop import (
    backward,
    finite_difference_check,
    forward_with_cache,
    manual_grads,
)
from companion.losses import cross_entropy


def loss(params, x, y, activation):
    return cross_entropy(mlp.forward(params, x, activation), y)


def problem(
    depth, width, activation, dtype=jnp.float32, batch=16, n_in=12, classes=5, seed=0
):
    sizes = [n_in] + [width] * (depth - 1) + [classes]
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = mlp.init_params(sizes, kp, scheme="xavier")
    params = jax.tree.map(
        lambda p: p.astype(dtype) + 0.01, params
    )  # non-zero biases too
    x = jax.random.normal(kx, (batch, n_in), dtype)
    y = jax.random.randint(ky, (batch,), 0, classes)
    return params, x, y


def worst_relative(a, b):
    """max over leaves of ||a − b|| / ||b||."""
    return max(
        float(jnp.linalg.norm(u - v) / jnp.linalg.norm(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_manual_grads_equal_jax_grad_float32(depth, activation):
    params, x, y = problem(depth, width=10 + depth, activation=activation)
    manual = manual_grads(params, x, y, activation)
    auto = jax.grad(loss)(params, x, y, activation)
    assert jax.tree.structure(manual) == jax.tree.structure(params)
    assert [g.shape for g in jax.tree.leaves(manual)] == [
        p.shape for p in jax.tree.leaves(params)
    ]
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(manual))
    assert worst_relative(manual, auto) <= 1e-5


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize(("depth", "width"), [(1, 0), (2, 7), (4, 33), (6, 5)])
def test_manual_grads_equal_jax_grad_float64(depth, width, activation):
    with jax.enable_x64(True):
        params, x, y = problem(depth, width, activation, dtype=jnp.float64, seed=depth)
        manual = manual_grads(params, x, y, activation)
        auto = jax.grad(loss)(params, x, y, activation)
        assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(manual))
        assert worst_relative(manual, auto) <= 1e-10


def test_single_example_and_jit():
    params, x, y = problem(3, 8, "tanh")
    one = manual_grads(params, x[0], y[0], "tanh")
    auto = jax.grad(loss)(params, x[:1], y[:1], "tanh")
    assert worst_relative(one, auto) <= 1e-5
    jitted = jax.jit(manual_grads, static_argnums=3)(params, x, y, "tanh")
    assert worst_relative(jitted, manual_grads(params, x, y, "tanh")) <= 1e-6


def test_forward_with_cache_matches_forward():
    params, x, _ = problem(4, 9, "sigmoid")
    logits, cache = forward_with_cache(params, x, "sigmoid")
    np.testing.assert_allclose(logits, mlp.forward(params, x, "sigmoid"), rtol=1e-6)
    assert len(cache.inputs) == 4 and len(cache.pre) == 3
    np.testing.assert_array_equal(cache.inputs[0], x)


def test_check_grads_on_the_loss():
    with jax.enable_x64(True):
        params, x, y = problem(3, 6, "tanh", dtype=jnp.float64)
        check_grads(
            lambda p: loss(p, x, y, "tanh"), (params,), order=1, modes=["fwd", "rev"]
        )


def test_finite_difference_check_accepts_right_and_catches_wrong_gradients():
    params, x, y = problem(3, 8, "tanh")

    def f(p):
        return loss(p, x, y, "tanh")

    right = manual_grads(params, x, y, "tanh")
    assert finite_difference_check(f, params, right, num_coords=25) < 1e-5
    assert (
        finite_difference_check(f, params, num_coords=10) < 1e-6
    )  # default: jax.grad in float64
    wrong = jax.tree.map(lambda g: 1.1 * g, right)
    assert finite_difference_check(f, params, wrong, num_coords=25) > 0.04
    # a gradient that is off in one bias only is found when that coordinate is sampled
    bad_bias = [right[0], (right[1][0], right[1][1].at[0].add(1.0)), right[2]]
    n = sum(p.size for p in jax.tree.leaves(params))
    assert finite_difference_check(f, params, bad_bias, num_coords=n) > 0.5


def test_bad_input():
    params, x, y = problem(2, 4, "relu")
    with pytest.raises(
        ValueError, match=r"unknown activation 'gelu'; choose one of \['relu', 'sigm"
    ):
        manual_grads(params, x, y, "gelu")
    with pytest.raises(ValueError, match="found 5 at index 2"):
        manual_grads(params, x, y.at[2].set(5))
    with pytest.raises(ValueError, match=r"labels must have shape \(16,\)"):
        manual_grads(params, x, y[:3])
    with pytest.raises(ValueError, match=r"input size; got \(16, 13\)"):
        manual_grads(params, jnp.zeros((16, 13)), y)
    with pytest.raises(TypeError, match="integer dtype"):
        manual_grads(params, x, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="num_coords must be positive"):
        finite_difference_check(lambda p: 0.0, params, num_coords=0)
    with pytest.raises(ValueError, match="layer 1 expects"):
        backward(
            [params[0], (jnp.zeros((3, 5)), jnp.zeros(5))],
            forward_with_cache(params, x)[1],
            y,
        )
    with pytest.raises(ValueError, match="the cache holds 2 layers but params has 1"):
        backward(params[:1], forward_with_cache(params, x)[1], y)
