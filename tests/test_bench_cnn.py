import importlib.util

import numpy as np
import pytest
from flax import nnx

from companion import bench_cnn
from companion.nnx_models import CNN


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
    # 3 Adam steps from the same weights on the same batches, in NNX (Winograd,
    # patches and lax.conv; fit and nnx.jit) and in PyTorch: the same losses to float32
    # rounding. A wrong layout in the torch twin, or a variant on other batches, breaks
    # this.
    rng = np.random.default_rng(0)
    x = rng.random((200, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 200).astype(np.int32)
    variants = ["fit", "nnx.jit", "fit-patches", "fit-lax", "nnx.jit-lax"]
    if importlib.util.find_spec("torch") is not None:
        variants.append("torch")
    rows = bench_cnn.run_cnn(x, y, batch_size=16, steps=3, repeat=1, variants=variants)
    assert [r.variant for r in rows] == variants
    np.testing.assert_allclose([r.loss for r in rows], rows[0].loss, rtol=1e-4)
    assert all(r.seconds > 0 and r.epochs == 1 for r in rows)
    two = bench_cnn.run_cnn(x, y, batch_size=16, steps=2, repeat=2, variants=["fit"])
    assert len(two[0].times) == 2
    # the loss is the first (warm-up) run's, the same whatever the rounds that follow
    one = bench_cnn.run_cnn(x, y, batch_size=16, steps=2, repeat=1, variants=["fit"])
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
