import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.mlp import (
    accuracy,
    forward,
    init_params,
    num_classes,
    param_count,
    predict,
)

NP_ACT = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def np_forward(params, x, activation="relu"):
    """Float64 numpy reference."""
    a = np.asarray(x, np.float64)
    for i, (W, b) in enumerate(params):
        z = a @ np.asarray(W, np.float64) + np.asarray(b, np.float64)
        a = z if i == len(params) - 1 else NP_ACT[activation](z)
    return a


@pytest.mark.parametrize("sizes", [[784, 128, 10], [5, 3], [7, 16, 16, 16, 4]])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_forward_matches_float64_numpy(sizes, activation):
    params = init_params(sizes, jax.random.key(1), scheme="xavier")
    x = jax.random.uniform(jax.random.key(2), (9, sizes[0]))
    got = forward(params, x, activation)
    assert got.shape == (9, sizes[-1]) and got.dtype == jnp.float32
    np.testing.assert_allclose(
        got, np_forward(params, x, activation), rtol=1e-5, atol=1e-5
    )


def test_single_example_batch_and_vmap_agree():
    params = init_params([784, 128, 10], jax.random.PRNGKey(516))
    x = jax.random.uniform(jax.random.key(0), (16, 784))
    batched = forward(params, x)
    np.testing.assert_allclose(
        jax.vmap(lambda xi: forward(params, xi))(x), batched, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(forward(params, x[3]), batched[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(forward)(params, x), batched, rtol=1e-5, atol=1e-6
    )


def test_init_is_reproducible_and_accepts_both_key_kinds():
    a = init_params([784, 128, 10], jax.random.PRNGKey(516))
    b = init_params([784, 128, 10], jax.random.PRNGKey(516))
    c = init_params([784, 128, 10], jax.random.PRNGKey(517))
    typed = init_params([784, 128, 10], jax.random.key(516))
    for (Wa, ba), (Wb, bb), (Wt, _) in zip(a, b, typed, strict=True):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(
            Wa, Wt
        )  # key(516) and PRNGKey(516) hold the same bits
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize(
    ("scheme", "std", "bias_zero"),
    [
        ("normal", lambda i, o: 0.02, False),
        ("he", lambda i, o: np.sqrt(2 / i), True),
        ("xavier", lambda i, o: np.sqrt(2 / (i + o)), True),
    ],
)
def test_init_statistics(scheme, std, bias_zero):
    sizes = [600, 400, 300]
    params = init_params(sizes, jax.random.key(3), scale=0.02, scheme=scheme)
    for (W, b), n_in, n_out in zip(params, sizes[:-1], sizes[1:], strict=True):
        assert W.shape == (n_in, n_out) and b.shape == (n_out,)
        assert abs(float(jnp.mean(W))) < 0.02 * std(n_in, n_out) * 10
        np.testing.assert_allclose(float(jnp.std(W)), std(n_in, n_out), rtol=0.02)
        if bias_zero:
            np.testing.assert_array_equal(b, 0.0)
        else:
            np.testing.assert_allclose(float(jnp.std(b)), 0.02, rtol=0.2)


def test_scale_only_affects_the_normal_scheme():
    k = jax.random.key(4)
    big, small = init_params([3, 2], k, scale=0.5), init_params([3, 2], k, scale=0.02)
    np.testing.assert_allclose(big[0][0], 25 * small[0][0], rtol=1e-6)
    np.testing.assert_array_equal(
        init_params([3, 2], k, 0.5, scheme="he")[0][0],
        init_params([3, 2], k, 0.02, scheme="he")[0][0],
    )


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ([784], "at least 2 entries"),
        ([], "at least 2 entries"),
        ([784, 0, 10], "got 0 at position 1"),
        ([784, -3], "got -3 at position 1"),
        ([784, 12.5], "got 12.5"),
        ([784, True], "got True"),
    ],
)
def test_init_refuses_bad_sizes(sizes, match):
    with pytest.raises(ValueError, match=match):
        init_params(sizes, jax.random.key(0))


def test_init_refuses_unknown_scheme():
    with pytest.raises(
        ValueError,
        match=r"unknown scheme 'kaiming'; choose one of \['he', 'normal', 'x",
    ):
        init_params([3, 2], jax.random.key(0), scheme="kaiming")


def test_forward_refuses_bad_input():
    params = init_params([784, 128, 10], jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"input size 784; got x of shape \(4, 28, 28\)"
    ):
        forward(params, jnp.zeros((4, 28, 28)))
    with pytest.raises(ValueError, match=r"input size 784; got x of shape \(\)"):
        forward(params, jnp.float32(1.0))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        forward(params, jnp.zeros(784), activation="gelu")
    with pytest.raises(
        ValueError, match="layer 1 expects 64 inputs but layer 0 gives 128 outputs"
    ):
        forward([params[0], (jnp.zeros((64, 10)), jnp.zeros(10))], jnp.zeros(784))
    with pytest.raises(ValueError, match="non-empty list"):
        forward([], jnp.zeros(784))
    with pytest.raises(ValueError, match=r"got W \(784, 128\), b \(10,\)"):
        forward([(params[0][0], jnp.zeros(10))], jnp.zeros(784))


def test_accuracy_and_predict_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50).astype(np.int32)
    assert float(accuracy(logits, labels)) == pytest.approx(
        np.mean(logits.argmax(1) == labels)
    )
    params = init_params([6, 4], jax.random.key(5))
    x = rng.normal(size=(8, 6)).astype(np.float32)
    np.testing.assert_array_equal(predict(params, x), np_forward(params, x).argmax(1))


def test_accuracy_refuses_bad_labels():
    with pytest.raises(ValueError, match="found 10 at index 1"):
        accuracy(jnp.zeros((2, 10)), jnp.array([1, 10]))
    with pytest.raises(ValueError, match=r"logits \(2, 10\) and labels \(3,\)"):
        accuracy(jnp.zeros((2, 10)), jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="integer dtype"):
        accuracy(jnp.zeros((2, 10)), jnp.array([1.0, 2.0]))


def test_param_count_formula():
    sizes = [784, 300, 100, 10]
    expected = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    assert param_count(init_params(sizes, jax.random.key(0))) == expected


def test_num_classes_is_the_last_layers_width():
    for sizes in ([784, 10], [20, 16, 12], [5, 4, 3, 2]):
        assert num_classes(init_params(sizes, jax.random.key(0))) == sizes[-1]
    with pytest.raises(ValueError, match="non-empty list of"):
        num_classes([])
