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


def test_train_step_with_sgd_equals_the_chapter_5_update():
    x, y = blobs(64)
    params = mlp.init_params([20, 16, 4], jax.random.key(0))
    model = MLP.from_params(params)
    optimizer = optim.make_optimizer(model, optax.sgd(0.1))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    loss = nnx_steps.guarded_train_step(
        model, optimizer, metrics, guard, jnp.asarray(x), jnp.asarray(y)
    )
    expected, expected_loss = sgd.sgd_update(params, x, y, 0.1)
    for layer, (W, b) in zip(model.layers, expected, strict=True):
        np.testing.assert_allclose(layer.kernel[...], W, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(layer.bias[...], b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    computed = metrics.compute()
    assert float(computed["loss"]) == pytest.approx(float(expected_loss), rel=1e-6)
    grads = jax.grad(sgd.loss_fn)(params, x, y)
    assert float(computed["grad_norm"]) == pytest.approx(
        float(optax.tree.norm(grads)), rel=1e-5
    )
    assert int(guard.first_bad_step[...]) == -1


def test_the_readable_step_is_the_guarded_step_on_finite_data():
    x, y = blobs(64)
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(2)) for _ in range(2)]
    opts = [
        optim.make_optimizer(
            m, OptimizerConfig(peak_lr=1e-2, warmup_steps=1, total_steps=9)
        )
        for m in models
    ]
    metrics = [nnx_steps.make_metrics() for _ in models]
    guard = nnx_steps.NonFiniteGuard()
    step = nnx.jit(nnx_steps.train_step)  # the readable step, as the chapter jits it
    for i in range(4):
        xb, yb = (
            jnp.asarray(x[i * 16 : (i + 1) * 16]),
            jnp.asarray(y[i * 16 : (i + 1) * 16]),
        )
        step(models[0], opts[0], metrics[0], xb, yb)
        nnx_steps.guarded_train_step(models[1], opts[1], metrics[1], guard, xb, yb)
    for a, b in zip(
        *(
            jax.tree.leaves(nnx.state((m, o)))
            for m, o in zip(models, opts, strict=True)
        ),
        strict=True,
    ):
        np.testing.assert_allclose(
            a, b, rtol=1e-5, atol=1e-7
        )  # float32, jit vs eager rounding
    for name, value in metrics[0].compute().items():
        assert float(value) == pytest.approx(
            float(metrics[1].compute()[name]), rel=1e-5
        )
    assert int(opts[0].step[...]) == 4


def test_guard_names_the_first_bad_step_not_a_later_one():
    x, y = blobs(64)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    optimizer = optim.make_optimizer(model, optax.sgd(0.1))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    xb, yb = jnp.asarray(x[:16]), jnp.asarray(y[:16])
    nan_xb = xb.at[3, 2].set(jnp.nan)
    # steps: good (0), good (1), bad at step 2 (undone), good (2), good (3), bad at step
    # 4 (undone)
    for batch in (xb, xb, nan_xb, xb, xb, nan_xb):
        nnx_steps.guarded_train_step(model, optimizer, metrics, guard, batch, yb)
    assert int(optimizer.step[...]) == 4  # the two bad steps did not count
    assert int(guard.first_bad_step[...]) == 2


@pytest.mark.parametrize(
    ("lr", "taken", "first_bad"),
    [(0.1, 2, 1), (1e30, 0, 0)],  # 1e30: finite gradients, every update overflows
)
def test_the_branch_on_a_cpu_and_the_select_elsewhere_undo_the_same_steps(
    monkeypatch, lr, taken, first_bad
):
    # On a CPU the guard undoes a step with lax.cond, on an accelerator with a select:
    # both must leave the model where the finite steps alone (the unguarded step)
    # take it.
    x, y = blobs(64)
    xb, yb = jnp.asarray(x[:16]), jnp.asarray(y[:16])
    nan_xb = xb.at[3, 2].set(jnp.nan)
    ref_model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    ref_opt = optim.make_optimizer(ref_model, optax.sgd(lr))
    for _ in range(taken):
        nnx_steps.train_step(ref_model, ref_opt, nnx_steps.make_metrics(), xb, yb)
    reference = jax.tree.leaves(nnx.state(ref_model, nnx.Param))
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(nnx_steps.jax, "default_backend", lambda b=backend: b)
        model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
        optimizer = optim.make_optimizer(model, optax.sgd(lr))
        metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
        for batch in (xb, nan_xb, xb):  # eager: the backend is read at every call
            nnx_steps.guarded_train_step(model, optimizer, metrics, guard, batch, yb)
        assert int(optimizer.step[...]) == taken, backend
        assert int(guard.first_bad_step[...]) == first_bad, backend
        params = jax.tree.leaves(nnx.state(model, nnx.Param))
        for ours, ref in zip(params, reference, strict=True):
            np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("groups", [2, 4])
def test_loss_in_row_groups_is_the_same_loss_logits_and_gradient(groups):
    x, y = (jnp.asarray(a) for a in blobs(64))
    model = MLP([20, 16, 4], rngs=nnx.Rngs(3))
    grad_fn = nnx.value_and_grad(nnx_steps.loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, x, y, groups)
    (loss1, logits1), grads1 = grad_fn(model, x, y)
    # independent reference: the raw-JAX loss on the model's own weights
    params = [(layer.kernel[...], layer.bias[...]) for layer in model.layers]
    np.testing.assert_allclose(loss, sgd.loss_fn(params, x, y), rtol=1e-6)
    np.testing.assert_allclose(loss, loss1, rtol=1e-6)
    np.testing.assert_array_equal(logits, logits1)  # row by row: the same products
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(
        ValueError, match="positive divisor of the batch size 64; got 3"
    ):
        nnx_steps.loss_fn(model, x, y, 3)
