import importlib.util
import math

import numpy as np
import pytest
from flax import nnx

from companion.bench import cnn as bench_cnn
from companion.nnx_models import CNN

HAS_TORCH = importlib.util.find_spec("torch") is not None


def images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32)


def test_cnn_step_flops_from_the_models_own_shapes():
    # Independent count: walk the model's parameters; a conv's kernel is applied at
    # every output pixel (28×28 for conv1, 14×14 for conv2), a dense kernel once.
    model = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0)))  # shapes only
    pixels = {"conv1": 28 * 28, "conv2": 14 * 14, "dense1": 1, "dense2": 1}
    macs = {k: pixels[k] * math.prod(getattr(model, k).kernel.shape) for k in pixels}
    first_input_grad = macs["conv1"]  # the images need no gradient
    per_example = 2 * (3 * sum(macs.values()) - first_input_grad)
    assert bench_cnn.cnn_step_flops(64) == 64 * per_example


def run(variant, steps=3, repeat=1):
    (row,) = bench_cnn.run_cnn(
        *images(), batch_size=16, steps=steps, repeat=repeat, variants=[variant]
    )
    assert row.variant == variant and row.seconds > 0 and row.epochs == repeat
    return row


@pytest.fixture(scope="module")
def reference_loss():
    """3 Adam steps of the same network from the same weights on the same batches, in
    PyTorch (an independent implementation); without torch, chapter 6's fit."""
    return run("torch" if HAS_TORCH else "fit").loss


@pytest.mark.parametrize(
    "variant", ["fit", "nnx.jit", "fast", "fast-patches", "fast-lax"]
)
def test_each_variant_trains_the_same_network(reference_loss, variant):
    # NNX (fit, nnx.jit, the fast loop with Winograd, patches and lax.conv) and
    # PyTorch: the same loss to float32 rounding. A wrong layout in the torch twin, or
    # a variant on other batches, breaks this.
    np.testing.assert_allclose(run(variant).loss, reference_loss, rtol=1e-4)


def test_the_loss_is_the_warm_up_runs_whatever_the_rounds():
    two, one = run("nnx.jit", steps=2, repeat=2), run("nnx.jit", steps=2, repeat=1)
    assert len(two.times) == 2 and len(one.times) == 1
    # the loss is the first (warm-up) run's, the same whatever the rounds that follow
    np.testing.assert_allclose(two.loss, one.loss, rtol=1e-6)


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
    with pytest.raises(ValueError, match="steps and repeat must be positive"):
        bench_cnn.run_cnn(x, y, batch_size=16, steps=1, repeat=0)
    y[3] = -1
    with pytest.raises(ValueError, match="found -1 at index 3"):
        bench_cnn.run_cnn(x, y, batch_size=16, steps=1)
