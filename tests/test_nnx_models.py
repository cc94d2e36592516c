import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from companion import mlp
from companion.nnx_models import CNN, MLP


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


def test_cnn_shapes_parameters_and_layouts():
    model = CNN(rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (3, 784))
    np.testing.assert_array_equal(model(x), model(x.reshape(3, 28, 28, 1)))
    count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 256 + 256) + (
        256 * 10 + 10
    )


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
            return (
                jax.lax.reduce_window(
                    x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
                / 4
            )

        h = pool(jax.nn.relu(conv(x, model.conv1)))
        h = pool(jax.nn.relu(conv(h, model.conv2))).reshape(2, -1)
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


def test_cnn_conv_forms_compute_the_same_function():
    lax_ = CNN(rngs=nnx.Rngs(4), conv="lax")
    assert isinstance(lax_.conv1, nnx.Conv) and type(lax_.conv1) is nnx.Conv
    x = jax.random.uniform(jax.random.key(0), (3, 784))
    for form in ("winograd", "patches"):
        fast = CNN(rngs=nnx.Rngs(4), conv=form)
        assert fast.conv2.winograd == (form == "winograd")
        a, b = nnx.state(fast, nnx.Param), nnx.state(lax_, nnx.Param)
        assert jax.tree.structure(a) == jax.tree.structure(b)  # the same parameters
        # float32 sums in a different order: agreement to rounding, far below the
        # logits
        np.testing.assert_allclose(fast(x), lax_(x), rtol=1e-4, atol=1e-5)
    assert CNN(rngs=nnx.Rngs(0)).conv == "winograd"  # the default
    with pytest.raises(ValueError, match=r"conv must be one of .*'winograd'.*'fft'"):
        CNN(rngs=nnx.Rngs(0), conv="fft")
