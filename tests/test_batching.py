import jax
import numpy as np
import pytest

from companion import batching
from companion.batching import batches, num_batches

# --- batches --------------------------------------------------------------------------

X = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
Y = np.arange(10, dtype=np.int32) % 10


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "sizes"),
    [
        (4, False, [4, 4, 2]),
        (4, True, [4, 4]),
        (10, False, [10]),
        (20, False, [10]),
        (20, True, []),
    ],
)
def test_batches_sizes_and_order(batch_size, drop_last, sizes):
    got = list(batches(X, Y, batch_size, drop_last=drop_last))
    assert [len(yb) for _, yb in got] == sizes
    assert num_batches(10, batch_size, drop_last=drop_last) == len(sizes)
    if got:
        np.testing.assert_array_equal(
            np.concatenate([yb for _, yb in got]), Y[: sum(sizes)]
        )
        for xb, yb in got:  # rows stay paired with their labels
            np.testing.assert_array_equal(np.asarray(xb), X[np.asarray(yb)])


def test_shuffling_is_a_permutation_fixed_by_the_key():
    key = jax.random.key(7)
    first = np.concatenate([yb for _, yb in batches(X, Y, 3, key=key)])
    again = np.concatenate([yb for _, yb in batches(X, Y, 3, key=key)])
    other = np.concatenate([yb for _, yb in batches(X, Y, 3, key=jax.random.key(8))])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(np.sort(first), Y)
    assert not np.array_equal(first, Y) and not np.array_equal(first, other)
    np.testing.assert_array_equal(first, np.asarray(jax.random.permutation(key, 10)))


def test_batches_accept_jax_arrays():
    got = list(batches(jax.numpy.asarray(X), jax.numpy.asarray(Y), 5))
    assert all(isinstance(xb, jax.Array) for xb, _ in got)
    np.testing.assert_array_equal(got[1][0], X[5:])


@pytest.mark.parametrize(
    ("x", "y", "size", "error", "match"),
    [
        (X, Y[:9], 4, ValueError, r"the same N; got x \(10, 3\) and y \(9,\)"),
        (
            X,
            Y.reshape(5, 2),
            4,
            ValueError,
            r"y \(N,\), the same N; got x \(10, 3\) and y \(5, 2\)",
        ),
        (X, np.where(Y == 3, 10, Y), 4, ValueError, "found 10 at index 3"),
        (X, Y.astype(np.float32), 4, TypeError, "integer dtype"),
        (
            np.where(X == 4, np.nan, X),
            Y,
            4,
            ValueError,
            r"x must be finite.*index \(1, 1\)",
        ),
        (X, Y, 0, ValueError, "batch_size must be positive; got 0"),
    ],
)
def test_batches_refuse_bad_input(x, y, size, error, match):
    with pytest.raises(error, match=match):
        next(batches(x, y, size))


def test_check_dataset_names_the_problem():
    # any trailing shape by default
    batching.check_dataset(np.zeros((4, 2, 2)), np.arange(4))
    with pytest.raises(
        ValueError,
        match=r"val_x must be \(N, D\) and val_y \(N,\), the same N; got val_x",
    ):
        batching.check_dataset(
            np.zeros((4, 2, 2)), np.arange(4), name="val_", flat=True
        )
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\); found 3 at index 3"):
        batching.check_dataset(np.zeros((4, 2)), np.arange(4), num_classes=3)
    with pytest.raises(
        ValueError, match=r"x must be finite; found 1 non-finite value\(s\).* \(2, 0\)"
    ):
        batching.check_dataset(np.array([[0.0], [1.0], [np.inf]]), np.arange(3))


def test_full_batches_counts_only_full_ones_and_refuses_none():
    assert [batching.full_batches(n, 32) for n in (32, 63, 64, 1000)] == [1, 1, 2, 31]
    with pytest.raises(ValueError, match="larger than the 10 examples"):
        batching.full_batches(10, 32)
    with pytest.raises(ValueError, match="batch_size must be positive; got 0"):
        batching.full_batches(10, 0)


def test_batch_indices_against_a_numpy_permutation_and_its_refusals():
    key = jax.random.key(3)
    perm = np.asarray(jax.random.permutation(key, 10))
    np.testing.assert_array_equal(
        batching.batch_indices(key, 10, 3), perm[:9].reshape(3, 3)
    )
    with pytest.raises(TypeError, match=r"batch_size must be an integer; got 2\.5"):
        batching.batch_indices(key, 10, 2.5)
    with pytest.raises(ValueError, match="no full batch"):
        batching.batch_indices(None, 3, 4)
