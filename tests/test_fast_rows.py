import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs
from flax import nnx

from companion import mlp, nnx_steps, sgd
from companion.backprop import manual_grads
from companion.fast import rows
from companion.losses import cross_entropy
from companion.nnx_models import MLP


def test_threads_counts_the_cores_this_process_may_use():
    assert rows.threads() == len(os.sched_getaffinity(0)) >= 1


@pytest.mark.parametrize(
    ("threads", "batch", "expected"),
    [
        (2, 64, 2),  # two groups of 32
        (2, 32, 1),  # two groups of 16 would be under min_rows
        (2, 48, 1),  # 48 // 32 = 1
        (2, 65, 1),  # odd: nothing but 1 divides it into at most 2
        (4, 128, 4),
        (4, 96, 3),  # at most 96 // 32 = 3 groups; 3 divides 96
        (4, 100, 2),  # at most 3 groups, and 3 does not divide 100
        (1, 1024, 1),
        (64, 1024, 32),  # every group keeps 32 rows
    ],
)
def test_batch_groups_one_per_core_dividing_the_batch(
    monkeypatch, threads, batch, expected
):
    monkeypatch.setattr(rows, "threads", lambda: threads)
    assert rows.batch_groups(batch) == expected
    assert batch % expected == 0


def test_batch_groups_min_rows(monkeypatch):
    monkeypatch.setattr(rows, "threads", lambda: 8)
    assert rows.batch_groups(64, min_rows=8) == 8
    assert rows.batch_groups(64, min_rows=64) == 1


def test_one_group_on_another_backend(monkeypatch):
    monkeypatch.setattr(rows, "threads", lambda: 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert rows.batch_groups(1024) == 1


@pytest.mark.parametrize(("batch", "min_rows"), [(0, 32), (-64, 32), (64, 0)])
def test_batch_groups_refuses_non_positive_sizes(batch, min_rows):
    with pytest.raises(ValueError, match="must be positive"):
        rows.batch_groups(batch, min_rows=min_rows)


@pytest.mark.parametrize(("batch", "groups"), [(64, 1), (64, 2), (96, 3), (8, 8)])
def test_row_groups_cover_the_batch_once_in_order(batch, groups):
    parts = rows.row_groups(batch, groups)
    covered = [i for part in parts for i in range(batch)[part]]
    assert covered == list(range(batch))
    assert {part.stop - part.start for part in parts} == {batch // groups}


@pytest.mark.parametrize(("batch", "groups"), [(64, 0), (64, -2), (64, 3), (8, 16)])
def test_row_groups_refuses_what_does_not_divide_the_batch(batch, groups):
    match = f"positive divisor of the batch size {batch}; got {groups}"
    with pytest.raises(ValueError, match=match):
        rows.row_groups(batch, groups)


@pytest.mark.parametrize(
    ("sizes", "groups"), [([20, 4], 2), ([20, 16, 8, 4], 2), ([20, 16, 8, 4], 4)]
)
def test_grouped_loss_and_gradient_match_manual_backprop(sizes, groups):
    # The batch split into row groups, each its own forward pass: the same mean loss and
    # the same gradient as the chapter-4 backward pass on the whole batch (float32: the
    # sums are taken in another order).
    x, y = blobs()
    params = mlp.init_params(sizes, jax.random.key(1), scheme="he")
    grouped = rows.grouped_loss_fn(sgd.loss_fn, groups)
    loss, grads = jax.jit(jax.value_and_grad(grouped))(params, x[:64], y[:64])
    np.testing.assert_allclose(
        loss, cross_entropy(mlp.forward(params, x[:64]), y[:64]), rtol=1e-6
    )
    for ours, ref in zip(
        jax.tree.leaves(grads),
        jax.tree.leaves(manual_grads(params, x[:64], y[:64])),
        strict=True,
    ):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_grouped_nnx_loss_is_the_loss_with_its_logits_in_row_order():
    # nnx_steps.loss_fn returns (loss, logits): the grouped loss puts the logits back
    # together in row order; loss, logits and gradients those of the whole batch, and
    # the logits the model's own
    x, y = blobs(64)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(3))

    def grouped_and_whole(model):
        grouped = rows.grouped_loss_fn(nnx_steps.loss_fn, 4)
        return [
            nnx.value_and_grad(f, has_aux=True)(model, x, y)
            for f in (grouped, nnx_steps.loss_fn)
        ]

    ((loss4, logits4), grads4), ((loss, _), grads) = nnx.jit(grouped_and_whole)(model)
    np.testing.assert_allclose(loss4, loss, rtol=1e-6)
    np.testing.assert_allclose(logits4, model(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss, cross_entropy(np.asarray(model(x)), y), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads4), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_grouped_loss_passes_extra_arguments_on():
    x, y = blobs(64)
    params = mlp.init_params([20, 8, 4], jax.random.key(4), scheme="xavier")
    grouped = rows.grouped_loss_fn(sgd.loss_fn, 2)(params, x, y, "tanh")
    whole = cross_entropy(mlp.forward(params, x, "tanh"), y)
    np.testing.assert_allclose(grouped, whole, rtol=1e-6)
    with pytest.raises(ValueError, match="divisor of the batch size 64; got 3"):
        rows.grouped_loss_fn(sgd.loss_fn, 3)(params, x, y)


@pytest.mark.parametrize("key", [None, jax.random.key(3)])
def test_a_grouped_epoch_trains_as_the_chapters_scan(key):
    x, y = blobs(n=256)
    init = mlp.init_params([20, 32, 4], jax.random.key(2))
    one, loss_one = sgd.train_epoch(
        init, x, y, lr=0.05, batch_size=64, mode="scan", key=key
    )
    four, loss_four = rows.grouped_scan_epoch(
        init, jnp.asarray(x), jnp.asarray(y), lr=0.05, batch_size=64, groups=4, key=key
    )
    for a, b in zip(jax.tree.leaves(four), jax.tree.leaves(one), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_four, loss_one, rtol=1e-6)


@pytest.mark.parametrize("groups", [0, -2, 3, 128])
def test_groups_must_divide_the_batch(groups):
    x, y = blobs(n=128)
    params = mlp.init_params([20, 4], jax.random.key(0))
    match = f"groups must be a positive divisor of the batch size 64; got {groups}"
    with pytest.raises(ValueError, match=match):
        rows.grouped_scan_epoch(
            params, jnp.asarray(x), jnp.asarray(y), lr=0.1, batch_size=64, groups=groups
        )
