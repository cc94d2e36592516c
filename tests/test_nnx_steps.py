import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import mlp, nnx_steps, optim, sgd
from companion.nnx_models import MLP
from companion.optim import OptimizerConfig


def numpy_cross_entropy(logits, y):
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def leaves(*objects):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(objects))]


def test_loss_fn_against_float64_numpy_and_in_float32_for_bfloat16_models():
    x, y = blobs(40)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    loss, logits = nnx_steps.loss_fn(model, jnp.asarray(x), jnp.asarray(y))
    assert loss == pytest.approx(numpy_cross_entropy(logits, y).mean(), rel=1e-6)
    half = MLP([20, 16, 4], rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert half(x).dtype == jnp.bfloat16
    loss16, logits16 = nnx_steps.loss_fn(half, jnp.asarray(x), jnp.asarray(y))
    assert loss16.dtype == logits16.dtype == jnp.float32


def test_loss_fn_of_an_unchecked_label_is_nan_above_and_wraps_below():
    """What the docstring says: no clamping; C or more is NaN, [-C, 0) counts from
    the end (a step does not check labels: fit does, once)."""
    x, _ = blobs(3)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    xb = jnp.asarray(x)
    step_loss = jax.jit(lambda y: nnx_steps.loss_fn(model, xb, y)[0])
    assert np.isnan(float(step_loss(jnp.array([0, 1, 4]))))
    assert np.isnan(float(step_loss(jnp.array([0, 1, 100]))))
    assert float(step_loss(jnp.array([0, 1, -1]))) == pytest.approx(
        float(step_loss(jnp.array([0, 1, 3]))), rel=1e-6
    )


@pytest.mark.parametrize("guarded", [False, True])
def test_a_step_with_sgd_is_the_chapter_5_update(guarded):
    x, y = blobs(64)
    params = mlp.init_params([20, 16, 4], jax.random.key(0))
    model = MLP.from_params(params)
    optimizer = optim.make_optimizer(model, optax.sgd(0.1))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    xb, yb = jnp.asarray(x), jnp.asarray(y)
    if guarded:
        nnx_steps.guarded_train_step(model, optimizer, metrics, guard, xb, yb)
    else:
        nnx_steps.train_step(model, optimizer, metrics, xb, yb)
    expected, expected_loss = sgd.sgd_update(params, x, y, 0.1)
    for layer, (W, b) in zip(model.layers, expected, strict=True):
        np.testing.assert_allclose(layer.kernel[...], W, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(layer.bias[...], b, rtol=1e-5, atol=1e-7)
    computed = metrics.compute()
    assert float(computed["loss"]) == pytest.approx(float(expected_loss), rel=1e-6)
    grads = jax.grad(sgd.loss_fn)(params, x, y)
    assert float(computed["grad_norm"]) == pytest.approx(
        float(optax.tree.norm(grads)), rel=1e-5
    )
    assert int(guard.first_bad_step[...]) == -1


def test_the_chapters_step_and_the_guarded_step_agree_on_finite_data():
    x, y = blobs(64)
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(2)) for _ in range(2)]
    cfg = OptimizerConfig(peak_lr=1e-2, warmup_steps=1, total_steps=9)
    opts = [optim.make_optimizer(m, cfg) for m in models]
    metrics = [nnx_steps.make_metrics() for _ in models]
    guard = nnx_steps.NonFiniteGuard()
    step = nnx.jit(nnx_steps.train_step)  # as the chapter jits it
    guarded = nnx.jit(nnx_steps.guarded_train_step)
    for i in range(4):
        xb, yb = jnp.asarray(x[i * 16 : (i + 1) * 16]), jnp.asarray(y[i * 16 :][:16])
        step(models[0], opts[0], metrics[0], xb, yb)
        guarded(models[1], opts[1], metrics[1], guard, xb, yb)
    for a, b in zip(
        leaves(models[0], opts[0]), leaves(models[1], opts[1]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for name, value in metrics[0].compute().items():
        assert float(value) == pytest.approx(float(metrics[1].compute()[name]))
    assert int(opts[0].step[...]) == int(opts[1].step[...]) == 4


def test_the_guard_undoes_the_first_bad_step_and_every_step_after_it():
    x, y = blobs(64)
    xb, yb = jnp.asarray(x[:16]), jnp.asarray(y[:16])
    nan_xb = xb.at[3, 2].set(jnp.nan)
    reference = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    ref_opt = optim.make_optimizer(reference, optax.adam(0.01))
    for _ in range(2):  # the two finite steps before the NaN batch, unguarded
        nnx_steps.train_step(reference, ref_opt, nnx_steps.make_metrics(), xb, yb)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    optimizer = optim.make_optimizer(model, optax.adam(0.01))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    step = nnx.jit(nnx_steps.guarded_train_step)
    for batch in (xb, xb, nan_xb, xb, xb, nan_xb):
        step(model, optimizer, metrics, guard, batch, yb)
    assert int(guard.first_bad_step[...]) == 2  # the first, not a later one
    assert np.isnan(float(guard.bad_loss[...])) and not bool(guard.bad_params[...])
    assert int(optimizer.step[...]) == 2  # the later finite steps were undone too
    for a, b in zip(leaves(model, optimizer), leaves(reference, ref_opt), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # jit against eager


def test_the_guard_catches_a_finite_update_that_overflows_the_parameters():
    x, y = blobs(64)
    x = 1e3 * x  # large, finite gradients: times 1e38, beyond float32's range
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    before = leaves(model)
    optimizer = optim.make_optimizer(model, optax.sgd(1e38))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    nnx_steps.guarded_train_step(
        model, optimizer, metrics, guard, jnp.asarray(x), jnp.asarray(y)
    )
    assert int(guard.first_bad_step[...]) == 0 and bool(guard.bad_params[...])
    assert np.isfinite(float(guard.bad_loss[...]))
    for a, b in zip(before, leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)
    # unguarded, the same step leaves non-finite parameters: what the guard prevents
    nnx_steps.train_step(model, optimizer, metrics, jnp.asarray(x), jnp.asarray(y))
    assert not all(np.isfinite(a).all() for a in leaves(model))


def test_eval_step_weighs_every_example_the_same_in_uneven_batches():
    x, y = blobs(50)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(1))
    metrics = nnx_steps.make_metrics(grad_norm=False)
    assert sorted(metrics.compute()) == ["accuracy", "loss"]
    step = nnx.jit(nnx_steps.eval_step)
    for start in (0, 32):  # batches of 32 and 18
        step(model, metrics, jnp.asarray(x[start : start + 32]), y[start : start + 32])
    logits = np.asarray(model(x))
    result = metrics.compute()
    expected = numpy_cross_entropy(logits, y).mean()
    assert float(result["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(result["accuracy"]) == pytest.approx(np.mean(logits.argmax(1) == y))
