import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.checks import check_finite, check_labels, is_concrete


@pytest.mark.parametrize(
    "labels", [[0, 1, 9], np.array([[0, 5], [9, 3]]), jnp.arange(10), []]
)
def test_check_labels_accepts_valid(labels):
    check_labels(
        np.asarray(labels, dtype=np.int32) if isinstance(labels, list) else labels, 10
    )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 10, 3], "found 10 at index 1"),
        ([-1, 0], "found -1 at index 0"),
        (np.array([[0, 1], [2, 12]]), r"found 12 at index \(1, 1\)"),
    ],
)
def test_check_labels_names_the_offending_value(labels, message):
    with pytest.raises(ValueError, match=r"\[0, 10\).*" + message):
        check_labels(np.asarray(labels), 10)


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0]), jnp.array([True, False])])
def test_check_labels_rejects_non_integer_dtypes(labels):
    with pytest.raises(TypeError, match="integer dtype"):
        check_labels(labels, 10)


def test_check_labels_skips_values_under_jit_but_checks_dtype():
    seen = []

    @jax.jit
    def f(y):
        seen.append(is_concrete(y))
        check_labels(y, 10)  # values unknown while tracing: no error, no host sync
        return y

    np.testing.assert_array_equal(f(jnp.array([42])), [42])
    assert seen == [False]
    with pytest.raises(TypeError):
        jax.jit(lambda y: check_labels(y, 10))(jnp.array([1.0]))


def test_check_finite():
    check_finite(np.ones((2, 3)))
    check_finite(np.array([1, 2]))  # integers are always finite
    with pytest.raises(
        ValueError, match=r"2 non-finite value\(s\), the first at index \(0, 1\): inf"
    ):
        check_finite(np.array([[0.0, np.inf], [np.nan, 1.0]]))
