import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion import loop
from companion.batching import epoch_key


def key_bytes(key):
    return None if key is None else np.asarray(jax.random.key_data(key)).tobytes()


def recording_epoch(losses, seen):
    """A stand-in for one epoch of training: records its arguments, reports the next
    loss.
    """

    def train_epoch(epoch, key, bar):
        seen.append((epoch, key_bytes(key)))
        bar.advance(5)
        return loop.EpochStats(losses[epoch], accuracy=0.5, grad_norm=2.0)

    return train_epoch


def test_run_gives_each_epoch_its_own_key_and_a_resumed_run_the_same_ones():
    key = jax.random.key(11)
    straight, resumed = [], []
    loop.run(
        recording_epoch([1.0] * 4, straight),
        epochs=4,
        steps_per_epoch=5,
        key=key,
        progress=False,
    )
    loop.run(
        recording_epoch([1.0] * 4, resumed),
        epochs=4,
        steps_per_epoch=5,
        start_epoch=2,
        key=key,
        progress=False,
    )
    assert [e for e, _ in straight] == [0, 1, 2, 3] and [e for e, _ in resumed] == [
        2,
        3,
    ]
    assert len({k for _, k in straight}) == 4  # a new order every epoch
    assert (
        resumed == straight[2:]
    )  # resumed at epoch 2: the same keys as the run that went through
    assert (
        straight[1][1]
        == key_bytes(jax.random.fold_in(key, 1))
        == key_bytes(epoch_key(key, 1))
    )
    unshuffled = []
    loop.run(
        recording_epoch([1.0] * 2, unshuffled),
        epochs=2,
        steps_per_epoch=5,
        progress=False,
    )
    assert [k for _, k in unshuffled] == [None, None]


def test_run_records_every_figure_and_calls_the_hooks_in_order():
    calls = []
    history = loop.run(
        recording_epoch([3.0, 2.0, 1.0], []),
        epochs=3,
        steps_per_epoch=5,
        progress=False,
        validate=lambda: calls.append("val") or loop.Metrics(0.25, 0.75),
        learning_rate=lambda: calls.append("lr") or 0.125,
        after_epoch=lambda e: calls.append(f"after {e}"),
    )
    assert history.loss == [3.0, 2.0, 1.0] and history.train_accuracy == [0.5] * 3
    assert history.grad_norm == [2.0] * 3 and history.learning_rate == [0.125] * 3
    assert history.val_loss == [0.25] * 3 and history.val_accuracy == [0.75] * 3
    assert len(history.epoch_time) == 3
    assert calls == [
        "lr",
        "val",
        "after 0",
        "lr",
        "val",
        "after 1",
        "lr",
        "val",
        "after 2",
    ]
    # the accuracy measured after the epoch replaces a running one; no grad norm: the
    # list stays empty
    history = loop.run(
        lambda e, k, b: loop.EpochStats(1.0),
        epochs=2,
        steps_per_epoch=1,
        progress=False,
        train_accuracy=lambda: 0.875,
    )
    assert history.train_accuracy == [0.875, 0.875] and history.grad_norm == []


def test_epoch_time_counts_the_training_only(monkeypatch):
    clock = iter(range(100))  # a fake perf_counter: each call reads one second later
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    ticks = []

    def train_epoch(epoch, key, bar):
        ticks.append(loop.time.perf_counter())  # one second of "training"
        return loop.EpochStats(1.0)

    def validate():
        for _ in range(5):  # five seconds of evaluation, which must not count
            loop.time.perf_counter()
        return loop.Metrics(1.0, 1.0)

    history = loop.run(
        train_epoch, epochs=2, steps_per_epoch=1, validate=validate, progress=False
    )
    assert history.epoch_time == [
        2,
        2,
    ]  # start → inside → end: two ticks, whatever validate does


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_naming_the_epoch(bad):
    seen = []
    with pytest.raises(
        loop.NonFiniteLossError,
        match=rf"diverged \(epoch 2\): the mean training loss is {bad}",
    ):
        loop.run(
            recording_epoch([1.0, bad, 1.0], seen),
            epochs=3,
            steps_per_epoch=5,
            progress=False,
        )
    assert [e for e, _ in seen] == [0, 1]  # stopped at once


def test_progress_counts_every_step(capsys):
    loop.run(
        recording_epoch([1.0, 1.0], []),
        epochs=2,
        steps_per_epoch=5,
        progress=True,
        desc="unit",
    )
    err = capsys.readouterr().err
    assert "unit" in err and "10/10" in err and "loss=1.0000" in err


def test_evaluate_batches_weighs_every_example_equally():
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.random((10, 3), np.float32)), jnp.arange(10) % 2
    per_example = jnp.sum(x, axis=1)  # a made-up per-example "loss"

    def sums(xb, yb):
        return jnp.sum(jnp.sum(xb, axis=1)), jnp.sum(yb == 1)

    for batch_size in (1, 3, 4, 10, 64):  # 10 = 3·3 + 1: a last batch of one
        metrics = loop.evaluate_batches(sums, x, y, batch_size)
        assert metrics.loss == pytest.approx(float(np.mean(per_example)), rel=1e-6)
        assert metrics.accuracy == 0.5
    with pytest.raises(ValueError, match="batch_size must be positive; got -1"):
        loop.evaluate_batches(sums, x, y, -1)


def test_argument_checks():
    with pytest.raises(ValueError, match="steps_per_epoch must be at least 1; got 0"):
        loop.run(
            recording_epoch([1.0], []), epochs=1, steps_per_epoch=0, progress=False
        )
    with pytest.raises(ValueError, match="start_epoch=2, epochs=1"):
        loop.run(recording_epoch([1.0], []), epochs=1, steps_per_epoch=1, start_epoch=2)
    with pytest.raises(ValueError, match="no examples to evaluate"):
        loop.evaluate_batches(
            lambda xb, yb: (0.0, 0), jnp.zeros((0, 3)), jnp.zeros(0), 4
        )
    with pytest.raises(ValueError, match="epochs must be at least 1; got 0"):
        loop.check_fit_args(epochs=0, start_epoch=0, has_x_val=False, has_y_val=False)
    with pytest.raises(ValueError, match="start_epoch=3, epochs=2"):
        loop.check_fit_args(epochs=2, start_epoch=3, has_x_val=False, has_y_val=False)
    with pytest.raises(ValueError, match="both x_val and y_val"):
        loop.check_fit_args(epochs=2, start_epoch=0, has_x_val=True, has_y_val=False)


def test_both_fits_share_the_records():
    from companion import nnx_training, training

    assert training.History is nnx_training.History is loop.History
    assert training.Metrics is nnx_training.Metrics is loop.Metrics
