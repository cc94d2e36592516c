import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import nnx_training, optim
from companion.fast import nnx_loop, rows
from companion.fast.conv import fast_cnn
from companion.loop import NonFiniteLossError
from companion.nnx_models import CNN, MLP


def leaves(*objects):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(objects))]


def train(fit, seed=2, **kwargs):
    x, y = blobs(200)  # 12 full batches of 16
    model = MLP([20, 16, 4], rngs=nnx.Rngs(seed))
    opt = optim.make_optimizer(model, optax.adam(1e-2))
    kwargs = {"epochs": 2, "batch_size": 16, "key": jax.random.key(0), **kwargs}
    fit(model, opt, x, y, **kwargs)
    return model, opt


@pytest.fixture(scope="module")
def fitted():
    """What the chapter's fit trains: the reference for the fast loop."""
    return leaves(*train(nnx_training.fit, progress=False))


@pytest.mark.parametrize(
    "kwargs", [{"steps_per_call": 5}, {"steps_per_call": 1}, {"groups": 4}]
)
def test_the_fast_loop_trains_as_fit_does(fitted, kwargs):
    # one lax.scan over many steps, one call per step, row groups: the same training
    fast = leaves(*train(nnx_loop.fast_fit, **kwargs))
    for a, b in zip(fast, fitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fast_loop_arguments_are_checked():
    with pytest.raises(ValueError, match="divisor of the batch size 16; got 3"):
        train(nnx_loop.fast_fit, groups=3)
    with pytest.raises(ValueError, match="steps_per_call must be at least 1; got 0"):
        train(nnx_loop.fast_fit, steps_per_call=0)


def test_the_fast_loops_guard_names_the_step_inside_a_multi_step_call():
    x, y = blobs(256)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    tx = optax.sgd(lambda t: jnp.where(t < 7, 0.01, jnp.inf))
    optimizer = optim.make_optimizer(model, tx)
    with pytest.raises(NonFiniteLossError, match=r"at optimizer step 7 \(epoch 1\)"):
        nnx_loop.fast_fit(
            model, optimizer, x, y, epochs=1, batch_size=16, steps_per_call=10
        )
    assert int(optimizer.step[...]) == 7  # steps 7, 8, 9 undone


def test_loops_well_flags_lax_conv_models_on_cpu():
    def abstract(make):  # the model's structure, no parameters computed
        return nnx.eval_shape(lambda: make(rngs=nnx.Rngs(0)))

    assert nnx_loop.loops_well(MLP([4, 2], rngs=nnx.Rngs(0)))
    assert nnx_loop.loops_well(abstract(fast_cnn))
    slow = jax.default_backend() == "cpu"
    assert nnx_loop.loops_well(abstract(CNN)) == (not slow)


def test_default_groups_one_per_core_but_one_for_batch_norm(monkeypatch):
    seen = []
    real = nnx_loop._fast_train_steps

    def spy(*args):
        seen.append(args[-1])  # groups, the last static argument
        return real(*args)

    monkeypatch.setattr(nnx_loop, "_fast_train_steps", spy)
    monkeypatch.setattr(rows, "threads", lambda: 2)
    x, y = blobs(128)

    class Normed(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(20, rngs=rngs)
            self.out = nnx.Linear(20, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(self.norm(x))

    for model in (MLP([20, 4], rngs=nnx.Rngs(0)), Normed(nnx.Rngs(0))):
        opt = optim.make_optimizer(model, optax.sgd(0.1))
        nnx_loop.fast_fit(model, opt, x, y, epochs=1, batch_size=64)
    # one group per core on a CPU (two here); one on any other backend; BatchNorm's
    # statistics are over the whole batch, so one group always
    assert seen == [2 if jax.default_backend() == "cpu" else 1, 1]
