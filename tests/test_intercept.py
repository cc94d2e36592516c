import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from companion.intercept import layer_names, layer_summaries, layers_recorded


class Scaled(nnx.Linear):  # a subclass that calls its parent's __call__
    def __call__(self, x):
        return 2.0 * super().__call__(x)


class Net(nnx.Module):
    def __init__(self, rngs):
        self.first = Scaled(3, 4, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 2, rngs=rngs)])

    def __call__(self, x):
        return self.blocks[0](nnx.relu(self.first(x)))


def test_each_layer_output_is_recorded_once_by_its_path():
    model = Net(nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((5, 3), dtype=np.float32))
    outputs = {}
    with layers_recorded(model, outputs):
        logits = model(x)
    # the references: the layers called directly, outside the recording
    first = model.first(x)
    np.testing.assert_allclose(outputs["first"], first, rtol=1e-6)
    np.testing.assert_allclose(outputs["blocks/0"], logits, rtol=1e-6)
    assert list(outputs) == ["first", "blocks/0"]


def test_a_shift_is_added_once_and_differentiates_the_outputs():
    model = Net(nnx.Rngs(0))
    x = jnp.ones((2, 3))
    zeros = {"first": jnp.zeros((2, 4)), "blocks/0": jnp.zeros((2, 2))}

    def total(shift):
        with layers_recorded(model, {}, shift):
            return model(x).sum()

    grads = jax.grad(total)(zeros)
    np.testing.assert_allclose(grads["blocks/0"], np.ones((2, 2)))  # d sum / d z
    # the shift on `first` is added once, after Scaled's factor 2
    w = model.blocks[0].kernel[...]
    relu_on = (model.first(x) > 0).astype(np.float32)
    np.testing.assert_allclose(grads["first"], relu_on * w.sum(axis=1), rtol=1e-6)


def test_the_classes_are_restored():
    before = (nnx.Linear.__dict__["__call__"], Scaled.__dict__["__call__"])
    with layers_recorded(Net(nnx.Rngs(0)), {}):
        assert nnx.Linear.__dict__["__call__"] is not before[0]
    assert (nnx.Linear.__dict__["__call__"], Scaled.__dict__["__call__"]) == before


def summed(logits, y):  # a loss: the logits weighted by y, summed
    return (logits * y).sum()


def test_layer_summaries_against_the_recorded_outputs_and_their_gradients():
    model = Net(nnx.Rngs(0))
    model.first.bias[...] = jnp.array([-100.0, 0.0, 0.0, 0.0])  # unit 0: dead
    x = jnp.asarray(np.random.default_rng(1).random((6, 3), dtype=np.float32))
    y = jnp.ones((6, 2))
    assert layer_names(model, x) == ["first", "blocks/0"]
    summaries = layer_summaries(model, x, y, summed)
    # the references: eager, outside jit; d loss / d z of `first` as in the test above
    outputs = {}
    with layers_recorded(model, outputs):
        model(x)
    w = np.asarray(model.blocks[0].kernel[...])
    relu_on = np.asarray(outputs["first"]) > 0
    grad_first = relu_on * w.sum(axis=1)  # (6, 4)
    dead_first = (grad_first == 0).all(axis=0).mean()
    assert dead_first >= 0.25  # unit 0 at least
    for (mean, std, dead), name, want_dead in zip(
        summaries, ["first", "blocks/0"], [dead_first, 0.0], strict=True
    ):
        z = np.asarray(outputs[name], np.float64)
        np.testing.assert_allclose([mean, std], [z.mean(), z.std()], rtol=1e-5)
        assert float(dead) == want_dead


def test_a_model_that_is_not_an_nnx_module_is_refused_by_name():
    params = [(jnp.ones((3, 2)), jnp.zeros(2))]  # chapter-2 params, not a module
    with pytest.raises(TypeError, match=r"reads an nnx\.Module's layers; got list"):
        layer_names(params, jnp.ones((1, 3)))
