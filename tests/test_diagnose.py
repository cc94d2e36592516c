import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs
from flax import nnx

from companion import diagnose, mlp
from companion.nnx_models import MLP


def params(sizes=(20, 16, 4), seed=0):
    return mlp.init_params(list(sizes), jax.random.key(seed))


# Models written here, as a reader would: plain nnx.Modules, nothing added for diagnose.
class Dense(nnx.Module):
    def __init__(self, rngs, n_in=20, hidden=16, classes=4):
        self.hidden = nnx.Linear(n_in, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, classes, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


class Probabilities(Dense):  # the classic bug: softmax before a logits loss
    def __call__(self, x):
        return nnx.softmax(super().__call__(x))


class Detached(Dense):  # no gradient reaches the first layer
    def __call__(self, x):
        return self.out(jax.lax.stop_gradient(nnx.relu(self.hidden(x))))


class SmallCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * 8, 3, rngs=rngs)

    def __call__(self, x):  # (B, 8, 8, 1)
        h = nnx.avg_pool(nnx.relu(self.conv(x)), (2, 2), (2, 2))
        return self.dense(h.reshape(len(h), -1))


def images(n=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 8, 8, 1), dtype=np.float32) * 0.5
    x[np.arange(n), 2 * y + 1, 2 * y + 1] += 1.0  # the class is a bright pixel
    return x, y


def loss_of(model, x, y):
    logits = model(jnp.asarray(x))
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), jnp.asarray(y)])


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (lambda: Dense(nnx.Rngs(0)), lambda: blobs(64)),
        (lambda: SmallCNN(nnx.Rngs(0)), images),
        (lambda: params(), lambda: blobs(64)),
    ],
    ids=["mlp", "cnn", "chapter-2 params"],
)
def test_no_false_alarm_on_a_healthy_model(model, data):
    x, y = data()
    result = diagnose.report(model(), x, y)
    assert result.problems == (), result.problems
    assert "nothing looks wrong" in str(result)


@pytest.mark.parametrize(
    ("make", "scale", "expected"),
    [
        (Probabilities, 1, ["probabilities", "remove the softmax"]),
        (Detached, 1, ["hidden: 100% of units dead", "grad hidden/kernel: exactly 0"]),
        (Dense, 300, ["far outside", "check the scaling"]),
    ],
    ids=["softmax before the loss", "no gradient flows", "inputs not scaled"],
)
def test_report_flags_the_classic_bugs_on_a_readers_model(make, scale, expected):
    x, y = blobs(64)
    problems = " ".join(diagnose.report(make(nnx.Rngs(0)), x * scale, y).problems)
    for phrase in expected:
        assert phrase in problems, problems


@pytest.mark.parametrize("shift", [0.0, -100.0])
def test_dead_fraction_counts_units_with_no_gradient(shift):
    # A bias of -100 puts every pre-activation below 0 for inputs in [0, 1): all ReLU
    # units dead. The count is checked against the definition, unit by unit.
    x = np.random.default_rng(1).random((64, 20), dtype=np.float32)
    y = np.zeros(64, int)
    p = params()
    p = [(p[0][0], p[0][1] + shift), p[1]]
    first, last = diagnose.layer_stats(p, x, y)
    z = np.asarray(x @ p[0][0] + p[0][1])
    assert first.name == "layers/0" and last.name == "layers/1"
    assert first.dead_fraction == pytest.approx(np.mean((z <= 0).all(axis=0)))
    assert first.mean == pytest.approx(z.mean(), rel=1e-5, abs=1e-6)
    assert first.std == pytest.approx(z.std(), rel=1e-5)
    if shift:
        assert first.dead_fraction == 1.0
        assert diagnose.grad_norms(p, x, y)["layers/0/kernel"] == 0.0


def test_dead_channels_of_a_convolution():
    x, y = images(16)
    model = SmallCNN(nnx.Rngs(0))
    model.conv.bias[...] = jnp.array([-1e3] * 3 + [1e3] * 5)  # 3 of 8 channels dead
    stats = {s.name: s for s in diagnose.layer_stats(model, x, y)}
    assert list(stats) == ["conv", "dense"]
    assert stats["conv"].dead_fraction == pytest.approx(3 / 8)
    assert stats["dense"].dead_fraction == 0.0  # the logits always get a gradient


def test_layer_outputs_are_read_from_the_models_own_call():
    x, y = blobs(16)
    model = Dense(nnx.Rngs(0))
    call = nnx.Linear.__dict__["__call__"]
    stats = diagnose.layer_stats(model, x, y)
    logits = np.asarray(model(jnp.asarray(x)))
    hidden = np.asarray(model.hidden(jnp.asarray(x)))
    assert [s.name for s in stats] == ["hidden", "out"]
    assert stats[0].std == pytest.approx(hidden.std(), rel=1e-5)
    assert stats[1].mean == pytest.approx(logits.mean(), rel=1e-5, abs=1e-6)
    assert nnx.Linear.__dict__["__call__"] is call  # the class is left as it was


@pytest.mark.parametrize("make", [Dense, SmallCNN])
def test_grad_norms_against_jax_grad(make):
    x, y = blobs(32) if make is Dense else images(32)
    model = make(nnx.Rngs(0))
    got = diagnose.grad_norms(model, x, y)
    grads = nnx.grad(lambda m: loss_of(m, x, y))(model)
    ref = {
        "/".join(map(str, path)): float(np.linalg.norm(np.ravel(g[...])))
        for path, g in nnx.to_flat_state(grads)
    }
    assert set(got) == set(ref) and len(got) == 4
    for name in ref:
        assert got[name] == pytest.approx(ref[name], rel=1e-5)
    p = params()
    ch2 = diagnose.grad_norms(p, *blobs(32))
    assert ch2["layers/0/kernel"] == pytest.approx(
        diagnose.grad_norms(MLP.from_params(p), *blobs(32))["layers/0/kernel"]
    )


def test_overfit_one_batch_passes_a_healthy_model_and_fails_a_dead_one():
    x, y = blobs(32)
    p = params()
    ok = diagnose.overfit_one_batch(p, x, y, steps=200)
    assert ok.passed and ok.final_loss < 0.05 < ok.first_loss
    dead = [(p[0][0], p[0][1] - 100.0), p[1]]  # nothing reaches the output
    bad = diagnose.overfit_one_batch(dead, x, y, steps=200)
    assert not bad.passed and bad.final_loss > 0.5
    model = Dense(nnx.Rngs(0))
    before = np.asarray(model.hidden.kernel[...])
    diagnose.overfit_one_batch(model, x, y, steps=5)
    np.testing.assert_array_equal(model.hidden.kernel[...], before)  # a copy


def test_report_names_each_problem():
    x, y = blobs(64)
    p = params()
    dead = diagnose.report([(p[0][0], p[0][1] - 100.0), p[1]], x, y)
    text = " ".join(dead.problems)
    assert "100% of units dead" in text and "layers/0/kernel: exactly 0" in text
    assert "overfit: loss stayed" in text
    nan = diagnose.report(
        [(p[0][0].at[0, 0].set(jnp.nan), p[0][1]), p[1]], x, y, overfit=False
    )
    assert any("not finite" in q for q in nan.problems)


def test_bad_input_is_named():
    p = params()
    x, y = blobs(8)
    with pytest.raises(ValueError, match="an empty batch"):
        diagnose.report(p, x[:0], y[:0])
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):
        diagnose.grad_norms(p, x, y[:5])
    with pytest.raises(ValueError, match=r"x must be a batch"):
        diagnose.input_stats(np.ones(5))
    with pytest.raises(ValueError, match="y must lie in"):
        diagnose.grad_norms(p, x, np.full(8, 4))  # 4 classes: labels 0..3
    with pytest.raises(TypeError, match=r"an nnx\.Module"):
        diagnose.layer_stats(object(), x, y)
