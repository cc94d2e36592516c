import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from companion import mlp
from companion.nnx_models import CNN, MLP


# --- the classes chapter 6 writes, copied exactly from the chapter -------------------
class ChapterMLP(nnx.Module):
    def __init__(self, sizes, *, rngs):
        self.layers = nnx.List(
            [
                nnx.Linear(n_in, n_out, rngs=rngs)
                for n_in, n_out in zip(sizes[:-1], sizes[1:])  # noqa: B905
            ]
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


class ChapterCNN(nnx.Module):
    def __init__(self, *, rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.dense1 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
        self.dense2 = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(-1, 28, 28, 1)  # (B, 784) -> (B, 28, 28, 1)
        x = nnx.relu(self.conv1(x))  # (B, 28, 28, 32)
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))  # (B, 14, 14, 32)
        x = nnx.relu(self.conv2(x))  # (B, 14, 14, 64)
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))  # (B, 7, 7, 64)
        x = x.reshape(x.shape[0], -1)  # (B, 3136)
        x = nnx.relu(self.dense1(x))  # (B, 256)
        return self.dense2(x)  # (B, 10)


# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_the_chapters_classes_and_the_companions_give_the_same_logits(seed):
    x = jax.random.uniform(jax.random.key(1), (6, 784))
    pairs = [
        (ChapterMLP([784, 32, 16, 10], rngs=nnx.Rngs(seed)),
         MLP([784, 32, 16, 10], rngs=nnx.Rngs(seed))),
        (ChapterCNN(rngs=nnx.Rngs(seed)), CNN(rngs=nnx.Rngs(seed))),
    ]  # fmt: skip
    for chapters, ours in pairs:
        theirs_p = jax.tree.leaves(nnx.state(chapters, nnx.Param))
        ours_p = jax.tree.leaves(nnx.state(ours, nnx.Param))
        assert len(theirs_p) == len(ours_p)
        for a, b in zip(theirs_p, ours_p, strict=True):
            np.testing.assert_array_equal(a, b)  # the same draws, in the same order
        np.testing.assert_array_equal(chapters(x), ours(x))
        np.testing.assert_array_equal(nnx.jit(chapters)(x), nnx.jit(ours)(x))


def test_a_plain_list_of_layers_is_refused_by_nnx_so_mlp_uses_nnx_list():
    class Plain(nnx.Module):
        def __init__(self, rngs):
            self.layers = [nnx.Linear(2, 2, rngs=rngs)]

    with pytest.raises(ValueError, match=r"nnx\.List"):
        Plain(nnx.Rngs(0))
    assert isinstance(MLP([4, 3, 2], rngs=nnx.Rngs(0)).layers, nnx.List)


@pytest.mark.parametrize("sizes", [[784, 128, 10], [5, 3], [12, 16, 16, 7]])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_bridge_from_chapter_2_parameters_gives_identical_logits(sizes, activation):
    params = mlp.init_params(sizes, jax.random.PRNGKey(516))
    x = jax.random.uniform(jax.random.key(1), (9, sizes[0]))
    model = MLP.from_params(params, activation=activation)
    np.testing.assert_array_equal(model(x), mlp.forward(params, x, activation))
    assert [lay.kernel.shape for lay in model.layers] == [W.shape for W, _ in params]


def test_from_params_copies_so_training_cannot_delete_the_originals():
    params = mlp.init_params([6, 3], jax.random.key(0))
    model = MLP.from_params(params)
    assert model.layers[0].kernel[...] is not params[0][0]
    model.layers[0].kernel[...].delete()  # what donation does to the model's buffers
    assert not params[0][0].is_deleted()


def test_from_params_builds_the_same_structure_as_the_constructor():
    params = mlp.init_params([6, 5, 3], jax.random.key(0))
    model = MLP.from_params(params)
    # every variable holds a concrete array, none of eval_shape's placeholders
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(nnx.state(model)))
    # the same graph: a step compiled for one model is reused for the other
    assert nnx.graphdef(model) == nnx.graphdef(MLP([6, 5, 3], rngs=nnx.Rngs(1)))


def test_load_params_refuses_other_shapes():
    model = MLP([784, 64, 10], rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"layer shapes \[\(784, 128\), \(128, 10\)\]; this MLP has"
    ):
        model.load_params(mlp.init_params([784, 128, 10], jax.random.key(0)))


def test_mlp_and_cnn_refuse_bad_shapes():
    with pytest.raises(ValueError, match=r"input size 784; got \(2, 28, 28\)"):
        MLP([784, 10], rngs=nnx.Rngs(0))(jnp.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="sizes needs at least 2 entries"):
        MLP([784], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLP([4, 2], rngs=nnx.Rngs(0), activation="gelu")
    with pytest.raises(
        ValueError, match=r"\(B, 784\) or \(B, 28, 28, 1\); got \(2, 28, 28\)"
    ):
        CNN(rngs=nnx.Rngs(0))(jnp.zeros((2, 28, 28)))


def test_cnn_shapes_parameters_and_preactivations():
    model = CNN(rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (3, 784))
    np.testing.assert_array_equal(model(x), model(x.reshape(3, 28, 28, 1)))
    count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 256 + 256) + (
        256 * 10 + 10
    )
    pre = model.preactivations(x)
    assert {k: v.shape for k, v in pre.items()} == {
        "conv1": (3, 28, 28, 32),
        "conv2": (3, 14, 14, 64),
        "dense1": (3, 256),
    }
    # the ReLU of dense1's input, through dense2, is the model's output
    np.testing.assert_allclose(
        model.dense2(jax.nn.relu(pre["dense1"])), model(x), rtol=1e-6, atol=1e-6
    )
    hidden = MLP([784, 16, 8, 10], rngs=nnx.Rngs(0)).preactivations(x)
    assert {k: v.shape for k, v in hidden.items()} == {
        "layers/0": (3, 16),
        "layers/1": (3, 8),
    }


def test_cnn_against_an_independent_convolution():
    model = CNN(rngs=nnx.Rngs(3))
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))

    def reference(x):  # lax.conv_general_dilated + reduce_window, written out
        def conv(x, layer):
            y = jax.lax.conv_general_dilated(
                x,
                layer.kernel[...],
                (1, 1),
                "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            return y + layer.bias[...]

        def pool(x):
            window = (1, 2, 2, 1)
            return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, window, "VALID")

        h = pool(jax.nn.relu(conv(x, model.conv1))) / 4
        h = (pool(jax.nn.relu(conv(h, model.conv2))) / 4).reshape(2, -1)
        h = jax.nn.relu(h @ model.dense1.kernel[...] + model.dense1.bias[...])
        return h @ model.dense2.kernel[...] + model.dense2.bias[...]

    np.testing.assert_allclose(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters():
    params = mlp.init_params([784, 128, 10], jax.random.PRNGKey(516), scheme="he")
    model = MLP.from_params(params)
    half = MLP([784, 128, 10], rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    half.load_params(params)
    x = jax.random.uniform(jax.random.key(1), (16, 784))
    assert half.layers[0].kernel.dtype == jnp.float32 and half(x).dtype == jnp.bfloat16
    np.testing.assert_allclose(
        half(x).astype(jnp.float32), model(x), rtol=0.05, atol=0.05
    )
    cnn = CNN(rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
    assert cnn.conv1.kernel.dtype == jnp.float32 and cnn(x).dtype == jnp.bfloat16


@pytest.mark.imports
def test_the_models_are_the_chapters_and_load_no_cpu_speed_path():
    # the opt-in forms live in companion.fast (fast_cnn), not behind an option here
    params = set(inspect.signature(CNN.__init__).parameters)
    assert params == {"self", "rngs", "dtype", "param_dtype"}
    code = (
        "import sys, jax.numpy as jnp; from flax import nnx; "
        "from companion.nnx_models import CNN, MLP; "
        "CNN(rngs=nnx.Rngs(0))(jnp.ones((1, 784))); "
        "MLP([4, 2], rngs=nnx.Rngs(0))(jnp.ones((1, 4))); "
        "print(sorted(m for m in sys.modules if m.startswith('companion.fast')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
