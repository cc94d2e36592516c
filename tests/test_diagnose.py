import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs
from flax import nnx

from companion import diagnose, mlp
from companion.nnx_models import CNN, MLP


def params(sizes=(20, 16, 4), seed=0):
    return mlp.init_params(list(sizes), jax.random.key(seed))


def test_input_stats_on_hand_made_data():
    x = np.zeros((4, 3))
    x[:, 1] = [1.0, 2.0, 3.0, 4.0]  # features 0 and 2 are constant
    s = diagnose.input_stats(x)
    assert (s.mean, s.min, s.max) == (pytest.approx(2.5 / 3), 0.0, 4.0)
    assert s.std == pytest.approx(np.std(x))
    assert s.constant_features == 2 and s.non_finite == 0 and s.warnings == ()
    raw = diagnose.input_stats(x * 60)  # up to 240: pixels in [0, 255]
    assert len(raw.warnings) == 1 and "divide by 255" in raw.warnings[0]
    signed = diagnose.input_stats(x * -60)
    assert "check the scaling" in signed.warnings[0] and "255" not in signed.warnings[0]
    shifted = diagnose.input_stats(np.random.default_rng(0).random((50, 4)) + 5)
    assert len(shifted.warnings) == 1 and "subtract the mean" in shifted.warnings[0]
    x[0, 0] = np.nan
    nan = diagnose.input_stats(x)
    assert nan.non_finite == 1 and "1 values are NaN or infinite" in nan.warnings
    assert nan.max == 4.0  # statistics over the finite values


@pytest.mark.parametrize("shift", [0.0, -100.0])
def test_dead_fraction_counts_units_with_no_gradient(shift):
    # A bias of -100 puts every pre-activation below 0 for inputs in [0, 1): all ReLU
    # units dead. The count is checked against the definition, unit by unit.
    x = np.random.default_rng(1).random((64, 20), dtype=np.float32)
    p = params()
    p = [(p[0][0], p[0][1] + shift), p[1]]
    (layer,) = diagnose.activation_stats(p, x)
    z = np.asarray(x @ p[0][0] + p[0][1])
    assert layer.dead_fraction == pytest.approx(np.mean((z <= 0).all(axis=0)))
    assert layer.mean == pytest.approx(np.maximum(z, 0).mean(), rel=1e-5)
    if shift:
        assert layer.dead_fraction == 1.0
        assert diagnose.grad_norms(p, x, np.zeros(64, int))["W1"] == 0.0


def test_dead_units_of_the_nnx_models_and_saturated_tanh():
    x = np.random.default_rng(2).random((16, 784), dtype=np.float32)
    model = MLP([784, 8, 10], rngs=nnx.Rngs(0))
    # 3 of 8 units always below 0, the other 5 always above
    model.layers[0].bias[...] = jnp.array([-1e3] * 3 + [1e3] * 5)
    (layer,) = diagnose.activation_stats(model, x)
    assert layer.name == "layers/0" and layer.dead_fraction == pytest.approx(3 / 8)
    cnn = CNN(rngs=nnx.Rngs(0))
    cnn.conv2.bias[...] = jnp.array([-1e3] * 16 + [1e3] * 48)  # 16 of 64 channels dead
    stats = {s.name: s for s in diagnose.activation_stats(cnn, x)}
    assert list(stats) == ["conv1", "conv2", "dense1"]
    assert stats["conv2"].dead_fraction == pytest.approx(16 / 64)
    # tanh: saturated units (derivative < 1 % of its maximum) count as dead
    p = params((20, 4, 3))
    p = [(p[0][0], p[0][1].at[0].set(50.0)), p[1]]
    x20 = np.random.default_rng(3).random((32, 20), dtype=np.float32)
    (t,) = diagnose.activation_stats(p, x20, activation="tanh")
    assert t.dead_fraction == pytest.approx(1 / 4)


def test_grad_norms_against_jax_grad():
    x, y = blobs(32)
    p = params()
    ref = jax.grad(
        lambda q: (
            -jnp.mean(
                jax.nn.log_softmax(mlp.forward(q, x))[jnp.arange(32), jnp.asarray(y)]
            )
        )
    )(p)
    got = diagnose.grad_norms(p, x, y)
    assert list(got) == ["W1", "b1", "W2", "b2"]
    for name, g in zip(got, jax.tree.leaves(ref), strict=True):
        assert got[name] == pytest.approx(float(np.linalg.norm(g)), rel=1e-5)
    model = MLP.from_params(p)
    nnx_norms = diagnose.grad_norms(model, x, y)
    assert nnx_norms["layers/0/kernel"] == pytest.approx(got["W1"], rel=1e-5)
    assert nnx_norms["layers/1/bias"] == pytest.approx(got["b2"], rel=1e-5)


def test_overfit_one_batch_passes_a_healthy_model_and_fails_a_dead_one():
    x, y = blobs(32)
    p = params()
    ok = diagnose.overfit_one_batch(p, x, y, steps=200)
    assert ok.passed and ok.final_loss < 0.05 < ok.first_loss
    dead = [(p[0][0], p[0][1] - 100.0), p[1]]  # nothing reaches the output
    bad = diagnose.overfit_one_batch(dead, x, y, steps=200)
    assert not bad.passed and bad.final_loss > 0.5
    model = MLP.from_params(p)
    before = np.asarray(model.layers[0].kernel[...])
    diagnose.overfit_one_batch(model, x, y, steps=5)
    np.testing.assert_array_equal(model.layers[0].kernel[...], before)  # a copy


def test_report_names_each_problem():
    x, y = blobs(64)
    p = params()
    assert diagnose.report(p, x, y).problems == ()
    assert "nothing looks wrong" in str(diagnose.report(p, x, y, overfit=False))
    raw = diagnose.report(p, x * 300, y, overfit=False).problems
    # blobs are signed: not raw pixels, so the hint is to check the scaling
    assert any("far outside" in q and "check the scaling" in q for q in raw)
    dead = diagnose.report([(p[0][0], p[0][1] - 100.0), p[1]], x, y)
    text = " ".join(dead.problems)
    assert "100% of units dead" in text and "grad W1: exactly 0" in text
    assert "overfit: loss stayed" in text
    nan = diagnose.report(
        [(p[0][0].at[0, 0].set(jnp.nan), p[0][1]), p[1]], x, y, overfit=False
    )
    assert any("not finite" in q for q in nan.problems)


def test_confusion_matrix_against_counting():
    rng = np.random.default_rng(0)
    t, q = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    cm = diagnose.confusion_matrix(t, q, 5)
    for i in range(5):
        for j in range(5):
            assert cm[i, j] == np.sum((t == i) & (q == j))
    with pytest.raises(ValueError, match="y_pred must lie in"):
        diagnose.confusion_matrix(t, np.where(q == 4, 5, q), 5)


def test_bad_input_is_named():
    p = params()
    x, y = blobs(8)
    with pytest.raises(ValueError, match="an empty batch"):
        diagnose.report(p, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):
        diagnose.grad_norms(p, x, y[:5])
    with pytest.raises(ValueError, match=r"x must be a batch"):
        diagnose.input_stats(np.ones(5))
    with pytest.raises(ValueError, match=r"x must be \(B, 20\)"):
        diagnose.activation_stats(p, np.ones((4, 7)))
    with pytest.raises(ValueError, match="y must lie in"):
        diagnose.grad_norms(p, x, np.full(8, 4))  # 4 classes: labels 0..3
    with pytest.raises(TypeError, match="preactivations"):
        diagnose.activation_stats(object(), x)
