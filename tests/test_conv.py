import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.conv import avg_pool, same_conv


def numpy_conv(x, kernel, bias):
    # float64, written from the definition: every output pixel, every kernel tap
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    b, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    y = np.zeros((b, h, w, o)) + np.asarray(bias, np.float64)
    for i in range(h):
        for j in range(w):
            window = padded[:, i : i + kh, j : j + kw, :]  # (B, kh, kw, C)
            y[:, i, j, :] += np.einsum("bhwc,hwco->bo", window, kernel)
    return y


@pytest.mark.parametrize(
    ("kh", "kw", "c", "o", "h", "w"),
    [(3, 3, 1, 32, 28, 28), (3, 3, 5, 4, 7, 9), (1, 1, 3, 2, 4, 4), (5, 3, 2, 3, 6, 5)],
)
def test_same_conv_against_the_definition_in_float64(kh, kw, c, o, h, w):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (2, h, w, c))
    kernel = jax.random.normal(k2, (kh, kw, c, o))
    bias = jax.random.normal(k3, (o,))
    np.testing.assert_allclose(
        same_conv(x, kernel, bias), numpy_conv(x, kernel, bias), rtol=1e-5, atol=1e-5
    )


def test_same_conv_has_the_gradients_of_lax_conv():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k1, (3, 8, 8, 4))
    kernel = jax.random.normal(k2, (3, 3, 4, 6))
    cotangent = jax.random.normal(k3, (3, 8, 8, 6))

    def lax_conv(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def loss(conv):
        return lambda x, kernel: jnp.sum(conv(x, kernel) * cotangent)

    ours = jax.grad(loss(same_conv), argnums=(0, 1))(x, kernel)
    ref = jax.grad(loss(lax_conv), argnums=(0, 1))(x, kernel)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_avg_pool_against_numpy_windows():
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype(np.float32)
    ref = np.zeros((2, 3, 2, 3))
    for i in range(3):
        for j in range(2):
            ref[:, i, j] = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(avg_pool(x), ref, rtol=1e-6)
    np.testing.assert_allclose(avg_pool(x, 1), x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: same_conv(jnp.ones((28, 28, 1)), jnp.ones((3, 3, 1, 2))), "B, H, W"),
        (lambda: same_conv(jnp.ones((1, 5, 5, 1)), jnp.ones((2, 2, 1, 1))), "odd"),
        (
            lambda: same_conv(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 1, 1))),
            "x has 3 channels but the kernel expects 1",
        ),
        (lambda: avg_pool(jnp.ones((1, 5, 4, 1))), "divide the height and width"),
        (lambda: avg_pool(jnp.ones((5, 4))), r"takes x \(B, H, W, C\)"),
        (lambda: avg_pool(jnp.ones((1, 4, 4, 1)), 0), "must be positive"),
    ],
)
def test_bad_shapes_are_refused_with_a_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_patch_conv_is_an_nnx_conv_with_the_same_outputs_and_gradients():
    from flax import nnx

    from companion.conv import PatchConv

    fast = PatchConv(3, 5, (3, 5), rngs=nnx.Rngs(0))
    ref = nnx.Conv(3, 5, (3, 5), rngs=nnx.Rngs(0))
    assert isinstance(fast, nnx.Conv)
    ref.bias[...] = jnp.arange(5.0)  # a bias that is not zero, in both
    fast.bias[...] = jnp.arange(5.0)
    x = jax.random.normal(jax.random.key(2), (2, 6, 7, 3))
    np.testing.assert_allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)

    def loss(layer):
        return jnp.sum(jnp.sin(layer(x)))

    g_fast, g_ref = nnx.grad(loss)(fast), nnx.grad(loss)(ref)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="two odd positive sizes"):
        PatchConv(1, 2, (2, 2), rngs=nnx.Rngs(0))
