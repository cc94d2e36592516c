import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs

from companion import loop, mlp, sgd, training
from companion.backprop import manual_grads


def test_evaluate_against_numpy():
    x, y = blobs(n=250)
    params = mlp.init_params([20, 16, 4], jax.random.key(4))
    logits = np.asarray(mlp.forward(params, x), np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    metrics = training.evaluate(
        params, x, y, batch_size=64
    )  # 250 = 3 × 64 + 58: a partial batch
    assert metrics.loss == pytest.approx(-log_probs[np.arange(250), y].mean(), rel=1e-5)
    assert metrics.accuracy == pytest.approx(np.mean(logits.argmax(1) == y))


def test_fit_learns_a_learnable_problem():
    x, y = blobs(n=600)
    params = mlp.init_params([20, 32, 4], jax.random.key(5), scheme="he")
    start = training.evaluate(params, x[500:], y[500:])
    params, history = training.fit(
        params,
        x[:500],
        y[:500],
        epochs=8,
        lr=0.05,
        batch_size=50,
        x_val=x[500:],
        y_val=y[500:],
        key=jax.random.key(6),
        progress=False,
    )
    assert (
        len(history.loss)
        == len(history.train_accuracy)
        == len(history.val_accuracy)
        == 8
    )
    assert len(history.epoch_time) == 8 and all(t > 0 for t in history.epoch_time)
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.val_accuracy[-1] > 0.9 > start.accuracy
    assert history.val_accuracy[-1] == pytest.approx(
        training.evaluate(params, x[500:], y[500:]).accuracy
    )


def test_bad_data_is_refused_before_training():
    x, y = blobs(n=100)
    params = mlp.init_params([20, 4], jax.random.key(0))
    with pytest.raises(ValueError, match=r"found 10 at index 7"):
        sgd.train_epoch(
            params, x, np.where(np.arange(100) == 7, 10, y), lr=0.1, batch_size=10
        )
    with pytest.raises(ValueError, match=r"x must be finite"):
        sgd.train_epoch(params, np.where(x > 3, np.nan, x), y, lr=0.1, batch_size=10)
    with pytest.raises(ValueError, match=r"got x \(100, 20\) and y \(99,\)"):
        sgd.train_epoch(params, x, y[:99], lr=0.1, batch_size=10)
    with pytest.raises(ValueError, match=r"val_y must lie in \[0, 4\); found 12"):
        training.fit(
            params,
            x,
            y,
            epochs=1,
            lr=0.1,
            batch_size=10,
            x_val=x[:5],
            y_val=np.full(5, 12),
            progress=False,
        )
    with pytest.raises(ValueError, match="both x_val and y_val"):
        training.fit(
            params, x, y, epochs=1, lr=0.1, batch_size=10, x_val=x[:5], progress=False
        )
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        training.fit(params, x, y, epochs=0, lr=0.1, batch_size=10, progress=False)


def test_a_diverging_fit_stops_with_an_error_naming_the_epoch():
    x, y = blobs(n=100)
    params = mlp.init_params([20, 16, 4], jax.random.key(0), scheme="he")
    # lr 1e30: the first update overflows float32, the next epoch's loss is inf or nan
    with pytest.raises(
        loop.NonFiniteLossError,
        match=r"diverged \(epoch [12]\): the mean training loss is",
    ):
        training.fit(params, x, y, epochs=3, lr=1e30, batch_size=10, progress=False)


def test_labels_are_checked_against_the_models_own_classes():
    # 12 classes: labels 10 and 11 are valid for this model (MNIST's 10 is not the
    # limit) ...
    x, y = blobs(n=240, classes=12)
    assert y.max() == 11
    params = mlp.init_params([20, 16, 12], jax.random.key(1), scheme="he")
    params, history = training.fit(
        params, x, y, epochs=2, lr=0.05, batch_size=40, progress=False
    )
    assert mlp.num_classes(params) == 12 and len(history.loss) == 2
    assert 0 <= training.evaluate(params, x, y).accuracy <= 1
    # ... and 12 is not; a 4-class model refuses a label of 4
    with pytest.raises(
        ValueError, match=r"y must lie in \[0, 12\); found 12 at index 0"
    ):
        training.evaluate(params, x[:3], np.array([12, 0, 1]))
    small = mlp.init_params([20, 4], jax.random.key(0))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 4\); found 4"):
        sgd.train_epoch(small, x[:10], np.full(10, 4), lr=0.1, batch_size=5)


@pytest.mark.parametrize("mode", ["jit", "scan"])
def test_each_epoch_shuffles_with_its_own_key(monkeypatch, mode):
    x, y = blobs(n=100)
    seen = []
    real_epoch = sgd.train_epoch

    def recording_epoch(*args, key=None, **kwargs):
        seen.append(np.asarray(jax.random.key_data(key)))
        return real_epoch(*args, key=key, **kwargs)

    monkeypatch.setattr(training, "train_epoch", recording_epoch)
    key = jax.random.key(3)
    training.fit(
        mlp.init_params([20, 4], jax.random.key(0)),
        x,
        y,
        epochs=3,
        lr=0.1,
        batch_size=10,
        mode=mode,
        key=key,
        progress=False,
    )
    assert len({s.tobytes() for s in seen}) == 3  # a new order every epoch
    for epoch, got in enumerate(
        seen
    ):  # the resumable derivation: a function of the epoch alone
        np.testing.assert_array_equal(
            got, jax.random.key_data(jax.random.fold_in(key, epoch))
        )


def test_a_tanh_mlp_trains_with_its_own_activation():
    x, y = blobs(n=80)
    params = mlp.init_params([20, 16, 4], jax.random.key(2), scheme="xavier")
    new, _ = sgd.sgd_update(params, jnp.asarray(x), jnp.asarray(y), 0.1, "tanh")
    grads = manual_grads(
        params, x, y, "tanh"
    )  # independent: the chapter-4 backward pass
    for (W, b), (gW, gb), (W1, b1) in zip(params, grads, new, strict=True):
        np.testing.assert_allclose(W1, W - 0.1 * gW, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b1, b - 0.1 * gb, rtol=1e-5, atol=1e-6)
    fitted, _ = training.fit(
        params,
        x,
        y,
        epochs=1,
        lr=0.1,
        batch_size=80,
        mode="scan",
        activation="tanh",
        progress=False,
    )
    for a, b in zip(jax.tree.leaves(fitted), jax.tree.leaves(new), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    tanh_eval = training.evaluate(fitted, x, y, activation="tanh")
    ref = np.mean(np.argmax(mlp.forward(fitted, x, "tanh"), -1) == y)
    assert tanh_eval.accuracy == pytest.approx(ref)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        training.fit(
            params,
            x,
            y,
            epochs=1,
            lr=0.1,
            batch_size=80,
            activation="gelu",
            progress=False,
        )
