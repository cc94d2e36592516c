import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion import mlp, sgd, torch_bridge
from companion.bench import peers


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(
        np.int32
    )


def test_numpy_and_torch_epochs_match_jax():
    torch = pytest.importorskip(
        "torch"
    )  # the PyTorch variant is optional; the rest of bench is not
    x, y = data()
    init = mlp.init_params([784, 32, 10], jax.random.PRNGKey(516))
    jax_params, jax_loss = sgd.train_epoch(
        jax.tree.map(np.array, init), x, y, lr=0.1, batch_size=64, mode="jit"
    )
    np_params, np_loss = peers.numpy_epoch(
        [(np.asarray(W), np.asarray(b)) for W, b in init], x, y, 0.1, 64
    )
    model = torch_bridge.mlp_to_torch(init)
    torch_loss = peers.torch_epoch(
        model, torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), 0.1, 64
    )
    assert np_loss == pytest.approx(float(jax_loss), rel=1e-5)
    assert torch_loss == pytest.approx(float(jax_loss), rel=1e-5)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    for (W, b), (nW, nb), lin in zip(jax_params, np_params, linears, strict=True):
        np.testing.assert_allclose(nW, W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(nb, b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            lin.weight.detach().numpy().T, W, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(lin.bias.detach().numpy(), b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_numpy_epoch_follows_the_activation(activation):
    x, y = data(128)
    init = mlp.init_params([784, 16, 10], jax.random.key(3), scheme="xavier")
    jax_params, jax_loss = sgd.train_epoch(
        jax.tree.map(jnp.array, init),
        x,
        y,
        lr=0.1,
        batch_size=32,
        mode="jit",
        activation=activation,
    )  # donates a copy
    np_params, np_loss = peers.numpy_epoch(
        [(np.asarray(W), np.asarray(b)) for W, b in init], x, y, 0.1, 32, activation
    )
    assert np_loss == pytest.approx(float(jax_loss), rel=1e-5)
    for a, b in zip(
        jax.tree.leaves(np_params), jax.tree.leaves(jax_params), strict=True
    ):
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-6
        )  # float32, different summation order
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        peers.numpy_epoch(
            [(np.asarray(W), np.asarray(b)) for W, b in init], x, y, 0.1, 32, "gelu"
        )


def test_bad_input_is_refused_before_the_first_step():
    x, y = data(100)
    params = [
        (np.asarray(W), np.asarray(b))
        for W, b in mlp.init_params([784, 10], jax.random.key(0))
    ]
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\); found 10"):
        peers.numpy_epoch(params, x, np.where(np.arange(100) == 3, 10, y), 0.1, 10)
    with pytest.raises(ValueError, match="x must be finite"):
        peers.numpy_epoch(params, np.where(x > 0.99, np.nan, x), y, 0.1, 10)
    with pytest.raises(ValueError, match="larger than the 100 examples"):
        peers.numpy_epoch(params, x, y, 0.1, 128)
    torch = pytest.importorskip("torch")
    model = torch_bridge.mlp_to_torch(mlp.init_params([784, 10], jax.random.key(0)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with pytest.raises(ValueError, match="larger than the 100 examples"):
        peers.torch_epoch(model, xt, yt, 0.1, 128)
    with pytest.raises(ValueError, match="same length; got 100 and 99"):
        peers.torch_epoch(model, xt, yt[:99], 0.1, 10)


def test_torch_epoch_with_an_optimizer_and_a_step_limit():
    torch = pytest.importorskip("torch")
    x, y = data(256)
    init = mlp.init_params([784, 16, 10], jax.random.PRNGKey(1))
    a, b = torch_bridge.mlp_to_torch(init), torch_bridge.mlp_to_torch(init)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    # torch.optim.SGD without momentum is the same update (its fused kernel may round
    # differently: float32 rounding tolerance)
    la = peers.torch_epoch(a, x_t, y_t, 0.1, 64, steps=2)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    lb = peers.torch_epoch(b, x_t, y_t, 123.0, 64, optimizer=opt, steps=2)
    assert la == pytest.approx(lb, rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(
            p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-7
        )
    with pytest.raises(ValueError, match=r"steps must be in \[1, 4\]; got 5"):
        peers.torch_epoch(a, x_t, y_t, 0.1, 64, steps=5)
