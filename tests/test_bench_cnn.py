import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import blobs
from flax import nnx

from companion import bench_cnn, cpu, nnx_steps, nnx_training, optim
from companion.loop import NonFiniteLossError
from companion.nnx_models import CNN, MLP


def leaves(*objects):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(objects))]


def test_cnn_step_flops_from_the_models_own_shapes():
    # Independent count: walk the model's parameters; a conv's kernel is applied at
    # every output pixel (28×28 for conv1, 14×14 for conv2), a dense kernel once.
    model = CNN(rngs=nnx.Rngs(0))
    pixels = {"conv1": 28 * 28, "conv2": 14 * 14, "dense1": 1, "dense2": 1}
    macs = {k: pixels[k] * getattr(model, k).kernel[...].size for k in pixels}
    first_input_grad = macs["conv1"]  # the images need no gradient
    per_example = 2 * (3 * sum(macs.values()) - first_input_grad)
    assert bench_cnn.cnn_step_flops(64) == 64 * per_example


def test_every_variant_trains_the_same_network():
    # 3 Adam steps from the same weights on the same batches, in NNX (fit, nnx.jit,
    # the fast path with Winograd, patches and lax.conv) and in PyTorch: the same
    # losses to float32 rounding. A wrong layout in the torch twin, or a variant on
    # other batches, breaks this.
    rng = np.random.default_rng(0)
    x = rng.random((200, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 200).astype(np.int32)
    variants = ["fit", "nnx.jit", "fast", "fast-patches", "fast-lax"]
    if importlib.util.find_spec("torch") is not None:
        variants.append("torch")
    rows = bench_cnn.run_cnn(x, y, batch_size=16, steps=3, repeat=1, variants=variants)
    assert [r.variant for r in rows] == variants
    np.testing.assert_allclose([r.loss for r in rows], rows[0].loss, rtol=1e-4)
    assert all(r.seconds > 0 and r.epochs == 1 for r in rows)
    two = bench_cnn.run_cnn(x, y, batch_size=16, steps=2, repeat=2, variants=["fast"])
    assert len(two[0].times) == 2
    # the loss is the first (warm-up) run's, the same whatever the rounds that follow
    one = bench_cnn.run_cnn(x, y, batch_size=16, steps=2, repeat=1, variants=["fast"])
    np.testing.assert_allclose(two[0].loss, one[0].loss, rtol=1e-6)


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    x = rng.random((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    with pytest.raises(ValueError, match=r"unknown variants \['tpu'\]"):
        bench_cnn.run_cnn(x, y, variants=["fit", "tpu"])
    with pytest.raises(ValueError, match="more than an epoch of 4 batches of 16"):
        bench_cnn.run_cnn(x, y, batch_size=16, steps=5)
    with pytest.raises(ValueError, match="28×28 images"):
        bench_cnn.run_cnn(x[:, :100], y, batch_size=16, steps=1)
    y[3] = -1
    with pytest.raises(ValueError, match="found -1 at index 3"):
        bench_cnn.run_cnn(x, y, batch_size=16, steps=1)


# --- the opt-in fast path ------------------------------------------------------------


def train_fast(seed=2, **kwargs):
    x, y = blobs(200)  # 12 full batches of 16
    model = MLP([20, 16, 4], rngs=nnx.Rngs(seed))
    opt = optim.make_optimizer(model, optax.adam(1e-2))
    kwargs = {"epochs": 2, "batch_size": 16, "key": jax.random.key(0), **kwargs}
    bench_cnn.fast_fit(model, opt, x, y, **kwargs)
    return model, opt


def test_the_fast_path_trains_as_fit_does():
    x, y = blobs(200)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(2))
    opt = optim.make_optimizer(model, optax.adam(1e-2))
    nnx_training.fit(
        model, opt, x, y, epochs=2, batch_size=16, key=jax.random.key(0),
        progress=False,
    )  # fmt: skip
    reference = leaves(model, opt)
    # one lax.scan over many steps, one call per step, row groups: the same training
    for kwargs in ({"steps_per_call": 5}, {"steps_per_call": 1}, {"groups": 4}):
        fast = leaves(*train_fast(**kwargs))
        for a, b in zip(fast, reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grouped_loss_is_the_loss():
    x, y = blobs(64)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(3))
    grad_fn = nnx.value_and_grad(nnx_steps.loss_fn, has_aux=True)
    grouped_fn = nnx.value_and_grad(bench_cnn.grouped_loss_fn(4), has_aux=True)
    (loss, logits), grads = grad_fn(model, x, y)
    (loss4, logits4), grads4 = grouped_fn(model, x, y)
    np.testing.assert_allclose(loss4, loss, rtol=1e-6)
    np.testing.assert_allclose(logits4, logits, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads4), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fast_path_arguments_are_checked():
    with pytest.raises(ValueError, match="divisor of the batch size 16; got 3"):
        train_fast(groups=3)
    with pytest.raises(ValueError, match="steps_per_call must be at least 1; got 0"):
        train_fast(steps_per_call=0)


def test_the_fast_paths_guard_names_the_step_inside_a_multi_step_call():
    x, y = blobs(256)
    model = MLP([20, 16, 4], rngs=nnx.Rngs(0))
    tx = optax.sgd(lambda t: jnp.where(t < 7, 0.01, jnp.inf))
    optimizer = optim.make_optimizer(model, tx)
    with pytest.raises(NonFiniteLossError, match=r"at optimizer step 7 \(epoch 1\)"):
        bench_cnn.fast_fit(
            model, optimizer, x, y, epochs=1, batch_size=16, steps_per_call=10
        )
    assert int(optimizer.step[...]) == 7  # steps 7, 8, 9 undone


def test_loops_well_flags_lax_conv_models_on_cpu():
    assert bench_cnn.loops_well(MLP([4, 2], rngs=nnx.Rngs(0)))
    assert bench_cnn.loops_well(CNN(rngs=nnx.Rngs(0), conv="winograd"))
    slow = jax.default_backend() == "cpu"
    assert bench_cnn.loops_well(CNN(rngs=nnx.Rngs(0))) == (not slow)


def test_default_groups_one_per_core_but_one_for_batch_norm(monkeypatch):
    seen = []
    real = bench_cnn._fast_train_steps

    def spy(*args):
        seen.append(args[-1])  # groups, the last static argument
        return real(*args)

    monkeypatch.setattr(bench_cnn, "_fast_train_steps", spy)
    monkeypatch.setattr(cpu, "threads", lambda: 2)
    x, y = blobs(128)

    class Normed(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(20, rngs=rngs)
            self.out = nnx.Linear(20, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(self.norm(x))

    for model in (MLP([20, 4], rngs=nnx.Rngs(0)), Normed(nnx.Rngs(0))):
        opt = optim.make_optimizer(model, optax.sgd(0.1))
        bench_cnn.fast_fit(model, opt, x, y, epochs=1, batch_size=64)
    # one group per core on a CPU (two here); one on any other backend; BatchNorm's
    # statistics are over the whole batch, so one group always
    assert seen == [2 if jax.default_backend() == "cpu" else 1, 1]
