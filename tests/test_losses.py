import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from companion import losses
from companion.losses import (
    cross_entropy,
    cross_entropy_onehot,
    l2_penalty,
    log_softmax,
    mse,
    softmax,
)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    """Float64 numpy reference."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


@pytest.fixture
def batch():
    k1, k2 = jax.random.split(jax.random.key(0))
    return 3.0 * jax.random.normal(k1, (32, 10)), jax.random.randint(k2, (32,), 0, 10)


def test_log_softmax_and_softmax_match_float64_reference(batch):
    logits, _ = batch
    ref = np_log_softmax(logits)
    np.testing.assert_allclose(log_softmax(logits), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(softmax(logits), np.exp(ref), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        log_softmax(logits), jax.nn.log_softmax(logits), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        softmax(logits, axis=0), jax.nn.softmax(logits, axis=0), rtol=1e-6
    )


def test_cross_entropy_matches_optax_and_float64(batch):
    logits, labels = batch
    ref64 = -np_log_softmax(logits)[np.arange(32), np.asarray(labels)].mean()
    got = cross_entropy(logits, labels)
    assert abs(float(got) - ref64) / ref64 <= 1e-6
    np.testing.assert_allclose(
        got,
        optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        cross_entropy_onehot(logits, jax.nn.one_hot(labels, 10)), got, rtol=1e-6
    )
    np.testing.assert_allclose(
        cross_entropy(logits[0], labels[0]),
        -np_log_softmax(logits[0])[labels[0]],
        rtol=1e-6,
    )


def test_soft_targets_match_optax(batch):
    logits, _ = batch
    targets = jax.nn.softmax(jax.random.normal(jax.random.key(3), (32, 10)))
    np.testing.assert_allclose(
        cross_entropy_onehot(logits, targets),
        optax.softmax_cross_entropy(logits, targets).mean(),
        rtol=1e-6,
    )


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_stable_for_extreme_logits(scale):
    logits = scale * jnp.array(
        [[1.0, -1.0, 0.5, -0.25], [-1.0, 1.0, 0.0, 0.0]], jnp.float32
    )
    labels = jnp.array([0, 2])
    ref = -np_log_softmax(logits)[np.arange(2), labels]
    got = cross_entropy(logits, labels)
    assert np.isfinite(float(got))
    np.testing.assert_allclose(got, ref.mean(), rtol=1e-6)
    assert np.isfinite(np.asarray(softmax(logits))).all()
    assert np.isfinite(np.asarray(log_softmax(logits))).all()
    grads = jax.grad(cross_entropy)(logits, labels)
    assert np.isfinite(np.asarray(grads)).all()


def test_invariant_under_a_large_common_shift():
    logits = jnp.array([[1.0, 2.0, 3.0], [0.5, -2.0, 4.0]], jnp.float32) + 1e6
    # reference on the same float32 inputs (the shift already rounded them to multiples
    # of 1/16)
    np.testing.assert_allclose(
        log_softmax(logits), np_log_softmax(np.asarray(logits)), atol=1e-6
    )
    np.testing.assert_allclose(softmax(logits).sum(axis=-1), [1.0, 1.0], rtol=1e-6)
    assert np.isfinite(float(cross_entropy(logits, jnp.array([2, 0]))))


def test_gradient_is_softmax_minus_onehot(batch):
    logits, labels = batch
    grad = jax.grad(cross_entropy)(logits, labels)
    expected = (np.exp(np_log_softmax(logits)) - np.eye(10)[np.asarray(labels)]) / 32
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_same_results_under_jit(batch):
    logits, labels = batch
    for f, args in [
        (cross_entropy, (logits, labels)),
        (log_softmax, (logits,)),
        (softmax, (logits,)),
        (cross_entropy_onehot, (logits, jax.nn.one_hot(labels, 10))),
    ]:
        np.testing.assert_allclose(jax.jit(f)(*args), f(*args), rtol=1e-6, atol=1e-7)


def test_out_of_range_label_under_jit_gives_nan_not_a_clamped_value(batch):
    logits, labels = batch
    bad = labels.at[3].set(10)
    assert np.isnan(float(jax.jit(cross_entropy)(logits, bad)))
    assert np.isnan(float(jax.jit(cross_entropy)(logits, labels.at[0].set(-1))))


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (jnp.array([0, 1, 10]), ValueError, "found 10 at index 2"),
        (jnp.array([0, -1, 2]), ValueError, "found -1 at index 1"),
        (jnp.array([0.0, 1.0, 2.0]), TypeError, "integer dtype"),
        (
            jnp.array([0, 1]),
            ValueError,
            r"logits \(3, 10\) need labels of shape \(3,\), got \(2,\)",
        ),
        (jnp.array([[0, 1, 2]]), ValueError, "disagree on the batch"),
    ],
)
def test_cross_entropy_bad_labels(labels, error, match):
    with pytest.raises(error, match=match):
        cross_entropy(jnp.zeros((3, 10)), labels)


def test_bad_logits_and_targets():
    with pytest.raises(ValueError, match="logits must be finite"):
        cross_entropy(jnp.array([[0.0, jnp.nan]]), jnp.array([0]))
    with pytest.raises(TypeError, match="float array"):
        cross_entropy(jnp.array([[0, 1]]), jnp.array([0]))
    with pytest.raises(ValueError, match=r"shape of logits \(2, 3\)"):
        cross_entropy_onehot(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        cross_entropy_onehot(jnp.zeros((1, 2)), jnp.array([[1.5, -0.5]]))


def test_mse_against_numpy_and_refuses_broadcasting():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    np.testing.assert_allclose(mse(p, t), np.mean((p - t) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match=r"same shape; got \(4, 1\) and \(4,\)"):
        mse(jnp.zeros((4, 1)), jnp.zeros(4))


def test_l2_penalty_against_numpy():
    rng = np.random.default_rng(1)
    params = [
        (rng.normal(size=(5, 4)), rng.normal(size=4)),
        (rng.normal(size=(4, 2)), rng.normal(size=2)),
    ]
    weights = sum(np.sum(W.astype(np.float32) ** 2) for W, _ in params)
    everything = weights + sum(np.sum(b.astype(np.float32) ** 2) for _, b in params)
    jparams = jax.tree.map(jnp.asarray, params)
    np.testing.assert_allclose(l2_penalty(jparams), weights, rtol=1e-6)
    np.testing.assert_allclose(
        l2_penalty(jparams, weights_only=False), everything, rtol=1e-6
    )
    # its gradient is 2W on the weights and 0 on the biases
    g = jax.grad(l2_penalty)(jparams)
    np.testing.assert_allclose(g[0][0], 2 * jparams[0][0], rtol=1e-6)
    np.testing.assert_array_equal(g[0][1], 0.0)


def test_float64_precision():
    with jax.enable_x64(True):
        logits = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5)) * 4)
        labels = jnp.array([0, 1, 2, 3, 4, 0])
        ref = -np_log_softmax(np.asarray(logits))[
            np.arange(6), np.asarray(labels)
        ].mean()
        got = cross_entropy(logits, labels)
        assert got.dtype == jnp.float64
        assert abs(float(got) - ref) <= 1e-12 * abs(ref)


def test_per_example_cross_entropy_against_optax():
    import optax

    logits = jax.random.normal(jax.random.key(11), (6, 5)) * 4
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    ours = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    assert ours.shape == (6,)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels), ref.mean(), rtol=1e-6
    )


def test_per_example_kernel_checks_no_values_but_never_clamps():
    logits = jnp.zeros((3, 4))
    out = losses.softmax_cross_entropy_with_integer_labels(
        logits, jnp.array([0, 4, -1])
    )
    assert (
        np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2])
    )  # not clamped to class 3 or 0
    with pytest.raises(
        TypeError, match=r"got logits \(3, 4\) and labels \(3,\) of dtype float32"
    ):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.zeros(3))
    with pytest.raises(TypeError, match=r"labels \(2,\)"):
        losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))
