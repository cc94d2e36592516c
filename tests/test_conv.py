from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import companion.conv
import companion.cpu
from companion.conv import avg_pool, patches, same_conv, winograd_conv


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
        (lambda: patches(jnp.ones((5, 5, 1)), 3, 3), r"takes x \(B, H, W, C\)"),
        (lambda: patches(jnp.ones((1, 5, 5, 1)), 3, 2), "odd and positive"),
        (lambda: avg_pool(jnp.ones((1, 5, 4, 1))), "divide the height and width"),
        (lambda: avg_pool(jnp.ones((5, 4))), r"takes x \(B, H, W, C\)"),
        (lambda: avg_pool(jnp.ones((1, 4, 4, 1)), 0), "must be positive"),
    ],
)
def test_bad_shapes_are_refused_with_a_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fast_conv_is_an_nnx_conv_with_the_same_outputs_and_gradients():
    from flax import nnx

    from companion.conv import FastConv

    fast = FastConv(3, 5, (3, 5), rngs=nnx.Rngs(0))
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
    for bad in ((2, 2), 3, (3,), (3, 3, 3), (3.0, 3.0), (-1, 3)):
        with pytest.raises(ValueError, match=r"two odd positive sizes \(kh, kw\)"):
            FastConv(1, 2, bad, rngs=nnx.Rngs(0))
    # 3×3: Winograd by default, patches × matrix when asked; nnx.Conv's numbers
    ref = nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(1))
    for winograd in (True, False):
        fast = FastConv(3, 5, (3, 3), winograd=winograd, rngs=nnx.Rngs(1))
        assert fast.winograd is winograd
        np.testing.assert_allclose(fast(x), ref(x), rtol=1e-5, atol=1e-5)


def _lax_conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize(
    ("b", "h", "w", "kh", "kw", "c", "o"),
    [(2, 6, 4, 3, 5, 2, 3), (1, 5, 7, 3, 3, 1, 4), (3, 4, 4, 1, 3, 3, 2)],
)
def test_hand_written_gradient_against_lax_conv_in_float64(
    monkeypatch, threads, b, h, w, kh, kw, c, o
):
    # The kernel's gradient is summed in one group of pixels per thread: every group
    # count (1 when it does not divide B·H·W, e.g. 35 pixels and 2 threads) must give
    # XLA's own convolution gradient, to float64 rounding.
    monkeypatch.setattr(companion.cpu, "threads", lambda: threads)
    assert_vjp_is_lax_convs(same_conv, (b, h, w, c), (kh, kw, c, o), tol=1e-12)


def assert_vjp_is_lax_convs(conv, x_shape, kernel_shape, tol):
    """conv's output and both gradients equal lax.conv's in float64, to ``tol``."""
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
        x = jax.random.normal(k1, x_shape, jnp.float64)
        kernel = jax.random.normal(k2, kernel_shape, jnp.float64)
        g = jax.random.normal(k3, (*x_shape[:3], kernel_shape[-1]), jnp.float64)
        y, vjp = jax.vjp(conv, x, kernel)
        y_ref, vjp_ref = jax.vjp(_lax_conv, x, kernel)
        np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
        for ours, ref in zip(vjp(g), vjp_ref(g), strict=True):
            assert ours.dtype == jnp.float64
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("c", "winograd"),
    [(1, True), (2, True), (2, False)],  # one channel in: the shifted-taps path
)
def test_gradients_of_gradients_and_vmap_through_the_hand_written_gradient(c, winograd):
    conv = partial(same_conv, winograd=winograd)
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(4))
        x = jax.random.normal(k1, (2, 5, 5, c), jnp.float64)
        kernel = jax.random.normal(k2, (3, 3, c, 3), jnp.float64)

        def curvature(conv):
            # a function of the kernel through its own gradient: needs the backward
            # pass to be differentiable
            grad = jax.grad(lambda k: jnp.sum(jnp.tanh(conv(x, k))))
            return jax.grad(lambda k: jnp.sum(grad(k) ** 2))(kernel)

        np.testing.assert_allclose(
            curvature(conv), curvature(_lax_conv), rtol=1e-10, atol=1e-12
        )
        # per-example kernel gradients under vmap
        per_example = jax.vmap(
            jax.grad(lambda k, xi: jnp.sum(jnp.sin(conv(xi[None], k)))),
            in_axes=(None, 0),
        )(kernel, x)
        ref = [
            jax.grad(lambda k, xi: jnp.sum(jnp.sin(_lax_conv(xi[None], k))))(kernel, xi)
            for xi in x
        ]
        np.testing.assert_allclose(per_example, np.stack(ref), rtol=1e-10, atol=1e-12)


def test_patches_against_the_definition():
    x = np.random.default_rng(5).normal(size=(2, 4, 5, 3))
    p = np.asarray(patches(jnp.asarray(x, jnp.float32), 3, 1))  # (2, 4, 5, 9)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)))
    for i in range(4):
        for j in range(5):
            # taps in the kernel's (di, dj, c) order
            ref = padded[:, i : i + 3, j : j + 1, :].reshape(2, -1)
            np.testing.assert_allclose(p[:, i, j], ref, rtol=1e-6)


@pytest.mark.parametrize("c", [1, 2])  # shifted taps; Winograd
def test_forward_mode_is_refused_by_jax_not_silently_wrong(c):
    x, kernel = jnp.ones((1, 3, 3, c)), jnp.ones((3, 3, c, 1))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda k: same_conv(x, k), (kernel,), (kernel,))


# Winograd's F(2×2, 3×3): odd and even sizes (an odd one is padded to even and cut
# back), images smaller than a block, one channel, many channels.
WINOGRAD_SHAPES = [
    (2, 14, 14, 32, 64),
    (3, 7, 5, 4, 6),
    (1, 1, 1, 3, 2),
    (2, 2, 9, 1, 5),
    (1, 28, 28, 3, 8),
    (4, 3, 2, 2, 1),
]


@pytest.mark.parametrize(("b", "h", "w", "c", "o"), WINOGRAD_SHAPES)
def test_winograd_conv_against_the_definition_in_float64(b, h, w, c, o):
    k1, k2 = jax.random.split(jax.random.key(6))
    x = jax.random.normal(k1, (b, h, w, c))
    kernel = jax.random.normal(k2, (3, 3, c, o))
    ref = numpy_conv(x, kernel, np.zeros(o))
    # float32; the transforms add a few roundings per output
    scale = np.sqrt(9 * c)  # an output's typical size
    np.testing.assert_allclose(winograd_conv(x, kernel), ref, atol=1e-5 * scale)
    with jax.enable_x64(True):
        x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(kernel, jnp.float64)
        y64 = winograd_conv(x64, k64)
        assert y64.dtype == jnp.float64
        np.testing.assert_allclose(y64, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("b", "h", "w", "c", "o"), WINOGRAD_SHAPES)
def test_winograd_gradients_against_lax_conv_in_float64(b, h, w, c, o):
    assert_vjp_is_lax_convs(winograd_conv, (b, h, w, c), (3, 3, c, o), tol=1e-11)


def test_same_conv_takes_winograd_for_3x3_and_patches_when_asked():
    k1, k2 = jax.random.split(jax.random.key(8))
    x = jax.random.normal(k1, (2, 6, 5, 4))
    kernel = jax.random.normal(k2, (3, 3, 4, 3))
    # the same numbers as winograd_conv exactly (the same computation), and as the
    # patches to float32 rounding: the two are different sums
    np.testing.assert_array_equal(same_conv(x, kernel), winograd_conv(x, kernel))
    with_patches = same_conv(x, kernel, winograd=False)
    np.testing.assert_allclose(with_patches, winograd_conv(x, kernel), atol=1e-5)
    assert not np.array_equal(with_patches, winograd_conv(x, kernel))


def test_winograd_keeps_a_low_precision_dtype():
    x = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
    y = winograd_conv(x, jnp.ones((3, 3, 2, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y[0, 1:3, 1:3], np.float32), 18.0)
    grads = jax.grad(lambda k: jnp.sum(winograd_conv(x, k)).astype(jnp.float32))(
        jnp.ones((3, 3, 2, 3), jnp.bfloat16)
    )
    assert grads.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: winograd_conv(jnp.ones((5, 5, 2)), jnp.ones((3, 3, 2, 1))), "B, H, W"),
        (
            lambda: winograd_conv(jnp.ones((1, 5, 5, 2)), jnp.ones((5, 5, 2, 1))),
            "computes 3×3 kernels; got 5×5",
        ),
        (
            lambda: winograd_conv(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 4, 1))),
            "x has 2 channels but the kernel expects 4",
        ),
    ],
)
def test_winograd_conv_refuses_bad_shapes_with_a_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_winograd_in_low_precision_is_within_a_few_roundings(dtype):
    # Random activations (all-ones inputs are exact in every route): the transforms
    # round coarsely in 16 bits, so the error is a few times the patches' (docstring),
    # and still about one rounding of the largest output.
    k1, k2 = jax.random.split(jax.random.key(9))
    x, kernel = (
        jax.random.normal(k1, (2, 9, 7, 16)),
        jax.random.normal(k2, (3, 3, 16, 5)),
    )
    ref = numpy_conv(x, kernel, np.zeros(5))
    xl, kl = x.astype(dtype), kernel.astype(dtype)
    err_w = np.abs(np.asarray(winograd_conv(xl, kl), np.float64) - ref).max()
    err_p = np.abs(
        np.asarray(same_conv(xl, kl, winograd=False), np.float64) - ref
    ).max()
    eps = float(jnp.finfo(dtype).eps)
    assert err_w < 2 * eps * np.abs(ref).max()
    assert err_w < 5 * err_p


def test_integers_take_the_patches_and_winograd_refuses_them():
    # Winograd's kernel transform has halves, which an integer dtype would round to 0
    x = jnp.arange(32).reshape(1, 4, 4, 2)
    kernel = jnp.arange(18).reshape(3, 3, 2, 1) % 4 - 1
    y = same_conv(x, kernel)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, numpy_conv(x, kernel, np.zeros(1)))
    for dtype in (jnp.int32, jnp.bool_):
        with pytest.raises(
            TypeError, match=f"floating-point inputs.*got {dtype.__name__}"
        ):
            winograd_conv(x.astype(dtype), kernel.astype(dtype))


@pytest.mark.parametrize(
    ("x_shape", "kernel_shape"),
    [
        ((0, 5, 5, 2), (3, 3, 2, 3)),
        ((1, 5, 5, 0), (3, 3, 0, 3)),
        ((1, 5, 5, 2), (3, 3, 2, 0)),
    ],
)
def test_winograd_takes_empty_batches_and_channels(x_shape, kernel_shape):
    x, kernel = jnp.ones(x_shape), jnp.ones(kernel_shape)
    y, vjp = jax.vjp(winograd_conv, x, kernel)
    assert y.shape == (*x_shape[:3], kernel_shape[-1])
    np.testing.assert_array_equal(y, 0.0)  # a sum over no channels, or no outputs
    dx, dk = vjp(jnp.ones_like(y))
    assert dx.shape == x_shape and dk.shape == kernel_shape
    # no images: a zero kernel gradient; no outputs: a zero input gradient (the other
    # gradient is then empty)
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_array_equal(dk, 0.0)
