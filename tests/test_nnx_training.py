import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import cpu, mlp, nnx_steps, nnx_training, optim
from companion.loop import NonFiniteLossError
from companion.nnx_models import MLP
from companion.optim import OptimizerConfig


def test_fit_overfits_one_batch_and_reports_history():
    x, y = blobs(32)
    model = MLP([20, 64, 4], rngs=nnx.Rngs(0))
    cfg = OptimizerConfig(
        peak_lr=1e-2, warmup_steps=5, total_steps=200, weight_decay=0.0
    )
    optimizer = optim.make_optimizer(model, cfg)
    history = nnx_training.fit(
        model,
        optimizer,
        x,
        y,
        epochs=200,
        batch_size=32,
        x_val=x,
        y_val=y,
        schedule=optim.make_schedule(cfg),
        progress=False,
    )
    assert history.loss[-1] < 0.01 < history.loss[0]
    assert history.val_accuracy[-1] == 1.0
    assert (
        len(history.grad_norm)
        == len(history.learning_rate)
        == len(history.epoch_time)
        == 200
    )
    assert history.learning_rate[-1] == pytest.approx(0.0, abs=1e-9)
    assert history.val_loss[-1] == pytest.approx(
        nnx_training.evaluate(model, x, y).loss, rel=1e-5
    )


def test_fit_fast_path_matches_the_readable_step():
    x, y = blobs(256)
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(1)) for _ in range(2)]
    cfg = OptimizerConfig(peak_lr=1e-2, warmup_steps=2, total_steps=40)
    opts = [optim.make_optimizer(m, cfg) for m in models]
    nnx_training.fit(models[0], opts[0], x, y, epochs=2, batch_size=32, progress=False)
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    for _ in range(2):
        for i in range(8):
            xb, yb = (
                jnp.asarray(x[i * 32 : (i + 1) * 32]),
                jnp.asarray(y[i * 32 : (i + 1) * 32]),
            )
            nnx_steps.guarded_train_step(models[1], opts[1], metrics, guard, xb, yb)
    leaves = [jax.tree.leaves(nnx.state(m)) for m in models]
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_guard_stops_training_and_keeps_the_last_finite_parameters():
    x, y = blobs(256)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    optimizer = optim.make_optimizer(
        model, optax.sgd(1e30)
    )  # the first update overflows
    before = [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]
    with pytest.raises(
        NonFiniteLossError,
        match=r"diverged at optimizer step 0 \(epoch 1\).*non-finite",
    ):
        nnx_training.fit(
            model,
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=16,
            check_every=4,
            progress=False,
        )
    after = [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]
    for a, b in zip(before, after, strict=True):  # every step was undone
        np.testing.assert_array_equal(a, b)

    # a NaN batch that bypassed validation (train_step trusts its inputs): recorded and
    # undone
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    optimizer = optim.make_optimizer(model, optax.sgd(0.1))
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    good, bad = jnp.asarray(x[:16]), jnp.asarray(x[:16]).at[0, 0].set(jnp.nan)
    nnx_steps.guarded_train_step(
        model, optimizer, metrics, guard, good, jnp.asarray(y[:16])
    )
    kept = [np.asarray(p) for p in jax.tree.leaves(nnx.state((model, optimizer)))]
    nnx_steps.guarded_train_step(
        model, optimizer, metrics, guard, bad, jnp.asarray(y[:16])
    )
    assert int(guard.first_bad_step[...]) == 1 and np.isnan(float(guard.bad_loss[...]))
    for a, b in zip(kept, jax.tree.leaves(nnx.state((model, optimizer))), strict=True):
        np.testing.assert_array_equal(a, b)


def test_evaluate_against_numpy():
    x, y = blobs(250)
    params = mlp.init_params([20, 16, 4], jax.random.key(4), scheme="he")
    logits = np.asarray(mlp.forward(params, x), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    result = nnx_training.evaluate(MLP.from_params(params), x, y, batch_size=64)
    assert result.loss == pytest.approx(-log_probs[np.arange(250), y].mean(), rel=1e-5)
    assert result.accuracy == pytest.approx(np.mean(logits.argmax(1) == y))


def test_bad_input():
    x, y = blobs(64)
    model = MLP([20, 4], rngs=nnx.Rngs(0))
    opt = optim.make_optimizer(model, optax.sgd(0.1))
    with pytest.raises(ValueError, match="found 11 at index 2"):
        nnx_training.fit(
            model,
            opt,
            x,
            np.where(np.arange(64) == 2, 11, y),
            epochs=1,
            batch_size=8,
            progress=False,
        )
    with pytest.raises(ValueError, match="x must be finite"):
        nnx_training.evaluate(model, np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match="larger than the 64 examples"):
        nnx_training.fit(model, opt, x, y, epochs=1, batch_size=100, progress=False)
    with pytest.raises(ValueError, match="both x_val and y_val"):
        nnx_training.fit(
            model, opt, x, y, epochs=1, batch_size=8, y_val=y, progress=False
        )
    with pytest.raises(ValueError, match="start_epoch"):
        nnx_training.fit(
            model, opt, x, y, epochs=1, batch_size=8, start_epoch=2, progress=False
        )
    with pytest.raises(ValueError, match=r"check_every must be at least 1 .*; got 0"):
        nnx_training.fit(
            model, opt, x, y, epochs=1, batch_size=8, check_every=0, progress=False
        )
    with pytest.raises(ValueError, match="batch_size must be positive; got 0"):
        nnx_training.evaluate(model, x, y, batch_size=0)
    with pytest.raises(
        ValueError, match=r"y must lie in \[0, 4\); found 4"
    ):  # the model's 4 classes
        nnx_training.evaluate(model, x[:2], np.array([0, 4]))


def test_labels_are_checked_against_the_models_own_classes():
    x, y = blobs(n=240, classes=12)
    model = MLP([20, 16, 12], rngs=nnx.Rngs(0))
    opt = optim.make_optimizer(model, optax.adam(1e-2))
    history = nnx_training.fit(
        model, opt, x, y, epochs=2, batch_size=40, x_val=x, y_val=y, progress=False
    )
    assert len(history.val_accuracy) == 2 and nnx_training.num_classes(model, x) == 12
    with pytest.raises(
        ValueError, match=r"y must lie in \[0, 12\); found 12 at index 1"
    ):
        nnx_training.fit(
            model,
            opt,
            x[:40],
            np.r_[0, 12, y[2:40]],
            epochs=1,
            batch_size=40,
            progress=False,
        )


def test_num_classes_does_not_call_the_model():
    class Counting(nnx.Module):
        def __init__(self):
            self.calls = nnx.Variable(jnp.array(0))
            self.linear = nnx.Linear(3, 5, rngs=nnx.Rngs(0))

        def __call__(self, x):
            self.calls[...] += 1  # a side effect, like batch statistics
            return self.linear(x)

    model = Counting()
    assert nnx_training.num_classes(model, np.zeros((7, 3), np.float32)) == 5
    assert int(model.calls[...]) == 0


def test_each_epoch_shuffles_with_its_own_key(monkeypatch):
    x, y = blobs(64)
    seen = []
    real_shuffle = nnx_training.shuffle

    def recording_shuffle(key, xs, ys):
        seen.append(np.asarray(jax.random.key_data(key)))
        return real_shuffle(key, xs, ys)

    monkeypatch.setattr(nnx_training, "shuffle", recording_shuffle)
    model = MLP([20, 4], rngs=nnx.Rngs(0))
    key = jax.random.key(7)
    nnx_training.fit(
        model,
        optim.make_optimizer(model, optax.sgd(0.1)),
        x,
        y,
        epochs=3,
        batch_size=16,
        key=key,
        progress=False,
    )
    expected = [
        np.asarray(jax.random.key_data(jax.random.fold_in(key, e))) for e in range(3)
    ]
    assert len(seen) == 3 and len({s.tobytes() for s in seen}) == 3
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_steps_per_call_changes_the_speed_not_the_training():
    # One lax.scan over many steps runs the same steps as one call per step: the same
    # parameters up to float32 rounding (the compiled loop may order sums differently).
    x, y = blobs(200)  # 12 full batches of 16: calls of 5, 5, 2 steps
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(2)) for _ in range(3)]
    for model, spc in zip(models, (1, 5, None), strict=True):
        opt = optim.make_optimizer(model, optax.adam(1e-2))
        nnx_training.fit(
            model, opt, x, y, epochs=2, batch_size=16, check_every=5,
            steps_per_call=spc, progress=False, key=jax.random.key(0),
        )  # fmt: skip
    ref = jax.tree.leaves(nnx.state(models[0]))
    for other in models[1:]:
        for a, b in zip(ref, jax.tree.leaves(nnx.state(other)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisor of the batch size 16; got 3"):
        nnx_training.fit(
            models[0], optim.make_optimizer(models[0], optax.sgd(0.1)), x, y,
            epochs=1, batch_size=16, groups=3, progress=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="steps_per_call must be at least 1; got 0"):
        nnx_training.fit(
            models[0], optim.make_optimizer(models[0], optax.sgd(0.1)), x, y,
            epochs=1, batch_size=16, steps_per_call=0, progress=False,
        )  # fmt: skip


def test_guard_names_the_step_inside_a_multi_step_call():
    x, y = blobs(256)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    # finite for a few steps, then a learning rate that overflows: the schedule's step 7
    tx = optax.sgd(optax.piecewise_constant_schedule(0.01, {7: 1e36}))
    optimizer = optim.make_optimizer(model, tx)
    with pytest.raises(NonFiniteLossError, match=r"at optimizer step 7 \(epoch 1\)"):
        nnx_training.fit(
            model, optimizer, x, y, epochs=1, batch_size=16, check_every=10,
            steps_per_call=10, progress=False,
        )  # fmt: skip
    assert int(optimizer.step[...]) == 7  # steps 7, 8, 9 undone


def test_loops_well_flags_lax_conv_models_on_cpu():
    from companion.nnx_models import CNN

    assert nnx_training.loops_well(MLP([4, 2], rngs=nnx.Rngs(0)))
    assert nnx_training.loops_well(CNN(rngs=nnx.Rngs(0)))
    slow = not (jax.default_backend() == "cpu")
    assert nnx_training.loops_well(CNN(rngs=nnx.Rngs(0), conv="lax")) == slow


def test_row_groups_change_the_speed_not_the_training():
    x, y = blobs(256)
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(2)) for _ in range(3)]
    for model, groups in zip(models, (1, 2, 4), strict=True):
        opt = optim.make_optimizer(model, optax.adam(1e-2))
        nnx_training.fit(
            model, opt, x, y, epochs=2, batch_size=64, groups=groups,
            progress=False, key=jax.random.key(0),
        )  # fmt: skip
    ref = jax.tree.leaves(nnx.state(models[0]))
    for other in models[1:]:
        for a, b in zip(ref, jax.tree.leaves(nnx.state(other)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_default_groups_one_per_core_but_one_for_batch_norm(monkeypatch):
    seen = []
    real = nnx_training._fast_train_steps

    def spy(*args):
        seen.append(args[-1])  # groups, the last static argument
        return real(*args)

    monkeypatch.setattr(nnx_training, "_fast_train_steps", spy)
    monkeypatch.setattr(cpu, "threads", lambda: 2)
    x, y = blobs(128)

    class Normed(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(20, rngs=rngs)
            self.out = nnx.Linear(20, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(self.norm(x))

    for model in (MLP([20, 4], rngs=nnx.Rngs(0)), Normed(nnx.Rngs(0))):
        opt = optim.make_optimizer(model, optax.sgd(0.1))
        nnx_training.fit(model, opt, x, y, epochs=1, batch_size=64, progress=False)
    # one group per core on a CPU (two here); one on any other backend; BatchNorm's
    # statistics are over the whole batch, so one group always
    assert seen == [2 if jax.default_backend() == "cpu" else 1, 1]
