import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import mlp, nnx_steps, nnx_training, optim
from companion.loop import NonFiniteLossError
from companion.nnx_models import MLP
from companion.optim import OptimizerConfig


def leaves(*objects):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(objects))]


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
        progress=False,
    )
    assert history.loss[-1] < 0.01 < history.loss[0]
    assert history.val_accuracy[-1] == 1.0
    assert len(history.grad_norm) == len(history.epoch_time) == 200
    assert history.val_loss[-1] == pytest.approx(
        nnx_training.evaluate(model, x, y).loss, rel=1e-5
    )


def test_fit_is_the_chapters_loop():
    # The loop chapter 6 writes: per epoch, a permutation by fold_in(key, epoch), full
    # batches in its order, the chapter's step under nnx.jit. fit must take the same
    # steps (its guard changes nothing on finite data) and report the same metrics.
    x, y = blobs(200)  # 12 full batches of 16, 8 examples left out each epoch
    key = jax.random.key(3)
    cfg = OptimizerConfig(peak_lr=1e-2, warmup_steps=2, total_steps=40)
    models = [MLP([20, 16, 4], rngs=nnx.Rngs(1)) for _ in range(2)]
    opts = [optim.make_optimizer(m, cfg) for m in models]
    history = nnx_training.fit(
        models[0], opts[0], x, y, epochs=2, batch_size=16, key=key, progress=False
    )
    step = nnx.jit(nnx_steps.train_step)
    metrics = nnx_steps.make_metrics()
    losses = []
    for epoch in range(2):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), 200))
        for i in range(200 // 16):
            idx = perm[i * 16 : (i + 1) * 16]
            step(models[1], opts[1], metrics, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
        losses.append(float(metrics.compute()["loss"]))
        metrics.reset()
    for a, b in zip(
        leaves(models[0], opts[0]), leaves(models[1], opts[1]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.loss, losses, rtol=1e-5)


def test_guard_stops_training_and_keeps_the_last_finite_parameters():
    x, y = blobs(256)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    # finite for 7 steps, then a learning rate that takes the parameters to inf
    tx = optax.sgd(lambda t: jnp.where(t < 7, 0.01, jnp.inf))
    optimizer = optim.make_optimizer(model, tx)
    with pytest.raises(
        NonFiniteLossError,
        match=r"at optimizer step 7 \(epoch 1\).*made the parameters non-finite",
    ):
        nnx_training.fit(
            model, optimizer, x, y, epochs=3, batch_size=16, progress=False
        )
    assert int(optimizer.step[...]) == 7  # steps 7 to 15 of the epoch were undone
    reference = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    ref_opt = optim.make_optimizer(reference, optax.sgd(0.01))
    nnx_training.fit(
        reference, ref_opt, x[: 7 * 16], y[: 7 * 16], epochs=1, batch_size=16,
        progress=False,
    )  # fmt: skip
    for a, b in zip(leaves(model), leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_evaluate_against_numpy_with_a_smaller_last_batch():
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

    def fit(x=x, y=y, **kwargs):
        kwargs = {"epochs": 1, "batch_size": 8, "progress": False, **kwargs}
        nnx_training.fit(model, opt, x, y, **kwargs)

    with pytest.raises(ValueError, match="found 11 at index 2"):
        fit(y=np.where(np.arange(64) == 2, 11, y))
    with pytest.raises(ValueError, match="x must be finite"):
        nnx_training.evaluate(model, np.full_like(x, np.nan), y)
    with pytest.raises(ValueError, match="larger than the 64 examples"):
        fit(batch_size=100)
    with pytest.raises(ValueError, match="both x_val and y_val"):
        fit(x_val=x)
    with pytest.raises(ValueError, match=r"val_y must lie in \[0, 4\); found 7"):
        fit(x_val=x[:2], y_val=np.array([0, 7]))
    with pytest.raises(ValueError, match="start_epoch"):
        fit(start_epoch=2)
    with pytest.raises(ValueError, match="batch_size must be positive; got 0"):
        nnx_training.evaluate(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 4\); found 4"):
        nnx_training.evaluate(model, x[:2], np.array([0, 4]))  # the model's 4 classes


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
            model, opt, x[:40], np.r_[0, 12, y[2:40]], epochs=1, batch_size=40,
            progress=False,
        )  # fmt: skip


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
    real_batch_indices = nnx_training.batch_indices

    def recording_batch_indices(key, n, batch_size):
        seen.append(np.asarray(jax.random.key_data(key)))
        return real_batch_indices(key, n, batch_size)

    monkeypatch.setattr(nnx_training, "batch_indices", recording_batch_indices)
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


@pytest.mark.imports
def test_fit_has_no_backend_dependent_settings_and_loads_no_speed_path():
    names = set(inspect.signature(nnx_training.fit).parameters)
    assert not names & {"groups", "steps_per_call", "check_every"}
    assert len(names) <= 12  # companion.training.fit's, with an optimizer
    code = (
        "import sys, numpy as np, optax; from flax import nnx; "
        "from companion import nnx_training; from companion.nnx_models import CNN; "
        "m = CNN(rngs=nnx.Rngs(0)); "
        "o = nnx.Optimizer(m, optax.sgd(0.1), wrt=nnx.Param); "
        "x = np.zeros((4, 784), np.float32); y = np.zeros(4, np.int32); "
        "nnx_training.fit(m, o, x, y, epochs=1, batch_size=4, progress=False); "
        "print(sorted(m for m in sys.modules if m.startswith('companion.fast')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
