import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs

from companion import mlp, sgd
from companion.backprop import manual_grads
from companion.losses import cross_entropy


def copy(params):
    return jax.tree.map(jnp.array, params)


@pytest.mark.parametrize("sizes", [[20, 4], [20, 16, 4], [20, 16, 16, 16, 4]])
def test_sgd_update_matches_manual_backprop(sizes):
    x, y = blobs()
    params = mlp.init_params(sizes, jax.random.key(1), scheme="he")
    new, loss = sgd.sgd_update(params, x[:64], y[:64], 0.1)
    grads = manual_grads(params, x[:64], y[:64])
    for (W, b), (nW, nb), (gW, gb) in zip(params, new, grads, strict=True):
        np.testing.assert_allclose(nW, W - 0.1 * gW, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(nb, b - 0.1 * gb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, sgd.loss_fn(params, x[:64], y[:64]), rtol=1e-6)


@pytest.mark.parametrize("key", [None, jax.random.key(3)])
def test_modes_agree_with_each_other_and_with_numpy(key):
    x, y = blobs(n=300)
    init = mlp.init_params([20, 32, 4], jax.random.key(2))
    results = {}
    for mode in sgd.MODES:
        results[mode] = sgd.train_epoch(
            copy(init), x, y, lr=0.05, batch_size=32, mode=mode, key=key
        )
    for mode in ("jit", "scan"):
        for a, b in zip(
            jax.tree.leaves(results[mode][0]),
            jax.tree.leaves(results["eager"][0]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[mode][1], results["eager"][1], rtol=1e-6)
    if (
        key is None
    ):  # independent reference: plain SGD, the chapter-4 backward pass, same batches
        ref, losses = init, []
        for i in range(300 // 32):
            xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
            losses.append(float(cross_entropy(mlp.forward(ref, xb), yb)))
            ref = [
                (W - 0.05 * gW, b - 0.05 * gb)
                for (W, b), (gW, gb) in zip(ref, manual_grads(ref, xb, yb), strict=True)
            ]
        # float32, 9 steps: the two backward passes round differently, by a few ulps per
        # step
        for a, b in zip(
            jax.tree.leaves(results["scan"][0]), jax.tree.leaves(ref), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(results["scan"][1], np.mean(losses), rtol=1e-5)


def test_epoch_uses_full_batches_only():
    x, y = blobs(n=100)
    init = mlp.init_params([20, 4], jax.random.key(0))
    _, loss = sgd.train_epoch(copy(init), x, y, lr=0.0, batch_size=32, mode="scan")
    expected = np.mean(
        [
            float(sgd.loss_fn(init, x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]))
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_each_compiled_function_traces_once_across_epochs():
    x, y = blobs(n=200)
    params = mlp.init_params([20, 8, 4], jax.random.key(0))
    before = sgd.trace_counts()
    for mode in ("jit", "scan"):
        for epoch in range(
            3
        ):  # new learning rates and new keys must not retrace either
            params, _ = sgd.train_epoch(
                params,
                x,
                y,
                lr=0.01 * (epoch + 1),
                batch_size=40,
                mode=mode,
                key=jax.random.key(epoch),
            )
    after = sgd.trace_counts()
    assert after.get("step", 0) - before.get("step", 0) == 1
    assert after.get("epoch", 0) - before.get("epoch", 0) == 1


def test_the_caller_keeps_the_parameters_it_passed():
    # Nothing is donated: the arrays passed in stay valid and unchanged.
    x, y = blobs(n=64)
    params = mlp.init_params([20, 4], jax.random.key(0))
    before = np.asarray(params[0][0]).copy()
    for mode in sgd.MODES:
        sgd.train_epoch(params, x, y, lr=0.1, batch_size=32, mode=mode)
        np.testing.assert_array_equal(params[0][0], before)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"mode": "fused"},
            ValueError,
            r"unknown mode 'fused'; choose one of \['eager', 'jit', 'scan'\]",
        ),
        ({"batch_size": 0}, ValueError, "batch_size must be positive; got 0"),
        ({"batch_size": 1000}, ValueError, "larger than the 100 examples"),
        # the scanned epoch checks them while tracing, with the same messages
        ({"batch_size": 0, "mode": "scan"}, ValueError, "must be positive; got 0"),
        ({"batch_size": 2.5, "mode": "scan"}, TypeError, "an integer; got 2.5"),
    ],
)
def test_train_epoch_refuses_bad_arguments(kwargs, error, match):
    x, y = blobs(n=100)
    args = {"lr": 0.1, "batch_size": 10, "mode": "jit"} | kwargs
    with pytest.raises(error, match=match):
        sgd.train_epoch(mlp.init_params([20, 4], jax.random.key(0)), x, y, **args)


def test_an_eager_step_checks_no_values(monkeypatch):
    # Validation happens once, at the entry (fit, evaluate, the public loss); the step
    # itself must not look at values (on an accelerator, a device→host copy and a wait
    # per step). Every value check goes through checks.is_concrete: count its calls. (A
    # transfer guard cannot see this on the CPU, where np.asarray of a device array is a
    # zero-copy view; it still catches scalar syncs.)
    from companion import checks
    from companion.losses import cross_entropy

    calls = []
    real = checks.is_concrete
    monkeypatch.setattr(checks, "is_concrete", lambda v: calls.append(1) or real(v))
    x, y = blobs(n=64)
    params = mlp.init_params([20, 16, 4], jax.random.key(0))
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    with jax.transfer_guard_device_to_host("disallow"):
        new, _ = sgd.sgd_update(params, x_dev, y_dev, 0.1)
        sgd.train_epoch(
            new, x_dev, y_dev, lr=0.1, batch_size=16, mode="eager", validate=False
        )
    assert calls == []
    cross_entropy(
        mlp.forward(params, x_dev), y_dev
    )  # the public loss does check the labels
    assert calls


def test_every_mode_takes_the_batches_of_batch_indices():
    # An epoch of the chapter's loop, written out: the rows of batch_indices(key), one
    # sgd_update each. Every mode must take exactly those batches, in that order.
    x, y = blobs(n=200)
    init = mlp.init_params([20, 8, 4], jax.random.key(0))
    key = jax.random.key(5)
    ref, losses = init, []
    perm = np.asarray(jax.random.permutation(key, 200))  # the shuffle, by hand
    for i in range(200 // 32):
        rows = perm[i * 32 : (i + 1) * 32]
        ref, loss = sgd.sgd_update(ref, x[rows], y[rows], 0.1)
        losses.append(float(loss))
    for mode in sgd.MODES:
        new, loss = sgd.train_epoch(
            init, x, y, lr=0.1, batch_size=32, mode=mode, key=key
        )
        for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)


def test_the_input_width_must_match_the_first_layer():
    x, y = blobs(n=64)
    params = mlp.init_params([30, 4], jax.random.key(0))
    match = r"first layer's input size 30 per example; got x of shape \(64, 20\)"
    with pytest.raises(ValueError, match=match):
        sgd.train_epoch(params, x, y, lr=0.1, batch_size=32)
