"""companion.torch_bridge against PyTorch: each copied model run in both frameworks on
the same numbers, logits and gradients compared (the layouts themselves:
test_torch_layouts.py)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion import mlp, torch_bridge
from companion.torch_layouts import CNN_KERNELS, cnn_kernel_to_torch

torch = pytest.importorskip("torch")
F = torch.nn.functional
nnx = pytest.importorskip("flax.nnx")


def images(n=6, seed=3):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def labels(n=6, seed=3):
    return np.random.default_rng(seed).integers(0, 10, n)


def _torch_loss_grads(twin, x, y):
    twin.zero_grad()
    F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    return [p.grad.numpy() for p in twin.parameters()]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_mlp_to_torch_from_params_same_logits_and_gradients(activation):
    params = mlp.init_params([784, 24, 16, 10], jax.random.key(2))
    x, y = images(), labels()
    twin = torch_bridge.mlp_to_torch(params, activation)
    np.testing.assert_allclose(
        twin(torch.from_numpy(x)).detach().numpy(),
        mlp.forward(params, x, activation),
        rtol=1e-5,
        atol=1e-5,
    )

    def loss(p):
        logits = mlp.forward(p, x, activation)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

    expected = [
        g.T if g.ndim == 2 else g
        for g in jax.tree.leaves(jax.jit(jax.grad(loss))(params))
    ]
    for theirs, ours in zip(_torch_loss_grads(twin, x, y), expected, strict=True):
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-6)


def test_mlp_both_ways_with_the_nnx_model():
    model = nnx_models().MLP([784, 20, 10], rngs=nnx.Rngs(4), activation="tanh")
    twin = torch_bridge.mlp_to_torch(model)
    assert isinstance(twin[1], torch.nn.Tanh)
    x = images()
    np.testing.assert_allclose(
        twin(torch.from_numpy(x)).detach().numpy(), model(x), rtol=1e-5, atol=1e-5
    )
    back = torch_bridge.mlp_from_torch(twin)
    assert back.activation == "tanh"
    for a, b in zip(back.layers, model.layers, strict=True):
        np.testing.assert_array_equal(a.kernel[...], b.kernel[...])
        np.testing.assert_array_equal(a.bias[...], b.bias[...])
    with pytest.raises(ValueError, match="activation is 'tanh'; got 'relu'"):
        torch_bridge.mlp_to_torch(model, "relu")


def test_mlp_from_a_torch_initialised_module():
    torch.manual_seed(0)
    module = torch_bridge.new_torch_mlp([784, 32, 10], "sigmoid")
    model = torch_bridge.mlp_from_torch(module)
    x = images()
    np.testing.assert_allclose(
        model(x), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )
    params = torch_bridge.mlp_params_from_torch(module)
    assert [W.shape for W, _ in params] == [(784, 32), (32, 10)]
    np.testing.assert_array_equal(params[0][0], module[0].weight.detach().numpy().T)


def test_mlp_from_a_float64_torch_module():
    torch.manual_seed(3)
    module = torch_bridge.new_torch_mlp([784, 16, 10]).double()
    model = torch_bridge.mlp_from_torch(module)  # float32, as the book's models
    x = images()
    expected = module(torch.from_numpy(x).double()).detach().numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_mlp_from_a_bfloat16_torch_module():
    # the module's own rounding is coarse: the check must allow it, not refuse the copy
    torch.manual_seed(4)
    module = torch_bridge.new_torch_mlp([784, 16, 10]).to(torch.bfloat16)
    model = torch_bridge.mlp_from_torch(module)
    expected = module[0].weight.detach().float().numpy().T
    np.testing.assert_array_equal(model.layers[0].kernel[...], expected)


def test_mlp_from_torch_refuses_what_it_cannot_copy():
    nn = torch.nn
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module; got list"):
        torch_bridge.mlp_from_torch([1, 2])
    with pytest.raises(ValueError, match=r"only layers with parameters are nn.Linear"):
        torch_bridge.mlp_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="do not chain"):
        torch_bridge.mlp_from_torch(nn.Sequential(nn.Linear(784, 8), nn.Linear(9, 10)))
    with pytest.raises(ValueError, match="has biases"):
        torch_bridge.mlp_from_torch(nn.Sequential(nn.Linear(784, 10, bias=False)))
    mixed = nn.Sequential(
        nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 10)
    )
    with pytest.raises(ValueError, match=r"found \['relu', 'tanh'\]"):
        torch_bridge.mlp_from_torch(mixed)
    # an activation the copy does not know about: caught by running both
    gelu = nn.Sequential(nn.Linear(784, 8), nn.GELU(), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="does not compute the book's MLP"):
        torch_bridge.mlp_from_torch(gelu, activation="relu")
    broken = nn.Sequential(nn.Linear(5, 3), nn.Unflatten(1, (2, 2)))
    with pytest.raises(ValueError, match=r"cannot run on a batch of shape \(3, 5\)"):
        torch_bridge.mlp_from_torch(broken)
    with pytest.raises(ValueError, match="unknown activation"):
        torch_bridge.mlp_to_torch(mlp.init_params([4, 2], jax.random.key(0)), "gelu")
    with pytest.raises(TypeError, match="copies the book's MLP; got CNN"):
        # (the structure is enough: the copy is refused before reading a value)
        torch_bridge.mlp_to_torch(
            nnx.eval_shape(lambda: nnx_models().CNN(rngs=nnx.Rngs(0)))
        )


def nnx_models():
    from companion import nnx_models

    return nnx_models


def test_cnn_to_torch_same_logits_and_gradients():
    # HWIO vs OIHW kernels, (h, w, c) vs (c, h, w) flattening: a missed transpose or
    # reordering changes the logits far beyond float32 rounding
    model = nnx_models().CNN(rngs=nnx.Rngs(7))
    x, y = images(8), labels(8)
    twin = torch_bridge.cnn_to_torch(model)
    np.testing.assert_allclose(
        twin(torch.from_numpy(x)).detach().numpy(), model(x), rtol=1e-4, atol=1e-5
    )

    def loss(m):
        return -jnp.mean(jax.nn.log_softmax(m(x))[jnp.arange(8), y])

    grads = nnx.jit(nnx.grad(loss))(model)
    theirs = _torch_loss_grads(twin, x, y)
    ours = [
        a
        for layer in CNN_KERNELS
        for a in (
            cnn_kernel_to_torch(layer, getattr(grads, layer).kernel[...]),
            getattr(grads, layer).bias[...],
        )
    ]
    for t, o in zip(theirs, ours, strict=True):
        np.testing.assert_allclose(t, o, rtol=1e-3, atol=2e-5)


def test_cnn_from_a_torch_initialised_module_and_back():
    torch.manual_seed(1)
    module = torch_bridge.new_torch_cnn()
    model = torch_bridge.cnn_from_torch(module)
    x = images(5)
    np.testing.assert_allclose(
        model(x), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5
    )
    again = torch_bridge.cnn_to_torch(model)
    for (name, a), b in zip(
        module.state_dict().items(), again.state_dict().values(), strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_cnn_from_a_module_that_takes_nchw_images():
    # a module without the Unflatten (it takes (B, 1, 28, 28)) is checked on images
    torch.manual_seed(2)
    module = torch_bridge.new_torch_cnn()[1:]
    model = torch_bridge.cnn_from_torch(module)
    x = images(3)
    np.testing.assert_allclose(
        model(x),
        module(torch.from_numpy(x.reshape(3, 1, 28, 28))).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_cnn_bridges_refuse_other_models():
    nn = torch.nn
    with pytest.raises(ValueError, match="cnn_to_torch copies the book's CNN"):
        torch_bridge.cnn_to_torch(nnx_models().MLP([784, 10], rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="cnn_to_torch copies the book's CNN"):
        torch_bridge.cnn_to_torch(mlp.init_params([784, 10], jax.random.key(0)))
    with pytest.raises(ValueError, match=r"Conv2d, Conv2d, Linear, Linear"):
        torch_bridge.cnn_from_torch(torch_bridge.new_torch_mlp([784, 10]))
    # same shapes, max pooling: only running both tells
    maxpool = torch_bridge.new_torch_cnn()
    maxpool[3], maxpool[6] = nn.MaxPool2d(2), nn.MaxPool2d(2)
    with pytest.raises(ValueError, match="does not compute the book's CNN"):
        torch_bridge.cnn_from_torch(maxpool)
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.Module"):
        torch_bridge.cnn_from_torch("cnn")

    class Scale(nn.Module):  # a parameter, but no `weight`
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"got \['Scale'\] with \[\(0,\)\]"):
        torch_bridge.cnn_from_torch(Scale())


def test_importing_the_bridge_loads_neither_torch_nor_flax():
    code = (
        "import sys, companion.torch_bridge; "
        "print([m for m in ('torch', 'flax') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
