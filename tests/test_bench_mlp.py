import numpy as np
import pytest

from companion.bench import mlp as bench_mlp
from companion.bench import tables


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32)


def test_epoch_flops_counts_every_matrix_product():
    B, steps = 32, 5
    forward = 2 * B * (784 * 128 + 128 * 64 + 64 * 10)
    backward_dW = forward
    backward_dx = 2 * B * (128 * 64 + 64 * 10)  # none for the input layer's input
    assert bench_mlp.epoch_flops(
        [784, 128, 64, 10], n=steps * B + 7, batch_size=B
    ) == steps * (forward + backward_dW + backward_dx)


def test_run_refuses_bad_data_once_before_timing():
    x, y = data(128)
    y[5] = 10
    with pytest.raises(
        ValueError, match=r"y must lie in \[0, 10\); found 10 at index 5"
    ):
        bench_mlp.run(x, y, epochs=1, variants=("scan",))


@pytest.fixture(scope="module")
def numpy_loss():
    """The numpy peer's loss (chapter 4's backward pass, no JAX): the reference."""
    (row,) = bench_mlp.run(*data(), epochs=1, lr=0.1, variants=("numpy",))
    return row.loss


@pytest.mark.parametrize(
    "variant", ["jit", "scan", "scan+groups", "torch", "torch.compile"]
)
def test_each_variant_trains_the_same_model(numpy_loss, variant):
    # Same init, same batches, same epochs: the loss agrees with numpy's to float32
    # rounding; a variant that trained something else (another update, other batches)
    # would not.
    if variant.startswith("torch"):
        pytest.importorskip("torch")
    (row,) = bench_mlp.run(*data(), epochs=1, lr=0.1, variants=(variant,))
    assert row.variant == variant and row.seconds > 0 and row.epochs == 1
    np.testing.assert_allclose(row.loss, numpy_loss, rtol=1e-4)


def test_eager_runs_alone_and_the_others_in_paired_rounds():
    x, y = data(128)
    rows = bench_mlp.run(
        x, y, epochs=3, eager_epochs=1, variants=("eager", "jit", "numpy")
    )
    assert [r.epochs for r in rows] == [1, 3, 3]
    assert all(r.seconds == sorted(r.times)[len(r.times) // 2] for r in rows)
    assert len(tables.race(rows, "jit", "numpy").ratios) == 3


def test_scaling_times_each_batch_size():
    x, y = data(512)
    out = bench_mlp.scaling(x, y, [32, 128], variants=("scan", "numpy"))
    assert list(out) == [32, 128]
    for rows in out.values():
        assert [r.variant for r in rows] == ["scan", "numpy"]
        np.testing.assert_allclose(rows[0].loss, rows[1].loss, rtol=1e-4)
    # a larger batch is fewer, larger steps of the same epoch: another loss
    assert out[32][0].loss != pytest.approx(out[128][0].loss, rel=1e-6)
