import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_reference import assert_vjp_is_lax_convs, normal, numpy_conv

from companion.fast.conv import same_conv
from companion.fast.winograd import winograd_conv

# Winograd's F(2×2, 3×3): odd and even sizes (an odd one is padded to even and cut
# back), images smaller than a block, one channel, many channels (the book's second
# layer: 14×14, 32 → 64).
WINOGRAD_SHAPES = [
    (2, 14, 14, 32, 64),
    (3, 7, 5, 4, 6),
    (1, 1, 1, 3, 2),
    (2, 2, 9, 1, 5),
    (4, 3, 2, 2, 1),
]


@pytest.mark.parametrize(("b", "h", "w", "c", "o"), WINOGRAD_SHAPES)
def test_winograd_conv_against_the_definition_and_lax_convs_gradients(b, h, w, c, o):
    x, kernel = normal(6, (b, h, w, c), (3, 3, c, o), dtype=np.float32)
    ref = numpy_conv(x, kernel)
    # float32; the transforms add a few roundings per output
    scale = np.sqrt(9 * c)  # an output's typical size
    y32 = jax.jit(winograd_conv)(x, kernel)
    np.testing.assert_allclose(y32, ref, atol=1e-5 * scale)
    with jax.enable_x64(True):
        x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(kernel, jnp.float64)
        y64 = jax.jit(winograd_conv)(x64, k64)
        assert y64.dtype == jnp.float64
        np.testing.assert_allclose(y64, ref, rtol=1e-12, atol=1e-12)
    # the hand-written gradient: the transposes of the transforms, to float64 rounding
    assert_vjp_is_lax_convs(winograd_conv, (b, h, w, c), (3, 3, c, o), tol=1e-11)


def test_same_conv_takes_winograd_for_3x3_and_patches_when_asked():
    x, kernel = normal(8, (2, 6, 5, 4), (3, 3, 4, 3), dtype=np.float32)
    # the same numbers as winograd_conv exactly (the same computation), and as the
    # patches to float32 rounding: the two are different sums
    both = jax.jit(
        lambda x, k: (
            same_conv(x, k),
            winograd_conv(x, k),
            same_conv(x, k, None, winograd=False),
        )
    )
    ours, wino, with_patches = both(x, kernel)
    np.testing.assert_array_equal(ours, wino)
    np.testing.assert_allclose(with_patches, numpy_conv(x, kernel), atol=1e-5)
    np.testing.assert_allclose(wino, numpy_conv(x, kernel), atol=1e-5)
    assert not np.array_equal(with_patches, wino)


def test_winograd_keeps_a_low_precision_dtype():
    x = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
    y = winograd_conv(x, jnp.ones((3, 3, 2, 3), jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    # all ones: 2 channels × 9 taps at an inner pixel, exact in bfloat16
    np.testing.assert_array_equal(np.asarray(y[0, 1:3, 1:3], np.float32), 18.0)
    grads = jax.jit(
        jax.grad(lambda k: jnp.sum(winograd_conv(x, k)).astype(jnp.float32))
    )(jnp.ones((3, 3, 2, 3), jnp.bfloat16))
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
    x, kernel = normal(9, (2, 9, 7, 16), (3, 3, 16, 5), dtype=np.float32)
    ref = numpy_conv(x, kernel)
    xl, kl = x.astype(dtype), kernel.astype(dtype)
    winograd, patches = jax.jit(
        lambda x, k: (winograd_conv(x, k), same_conv(x, k, None, winograd=False))
    )(xl, kl)
    err_w = np.abs(np.asarray(winograd, np.float64) - ref).max()
    err_p = np.abs(np.asarray(patches, np.float64) - ref).max()
    eps = float(jnp.finfo(dtype).eps)
    assert err_w < 2 * eps * np.abs(ref).max()
    assert err_w < 5 * err_p


def test_integers_take_the_patches_and_winograd_refuses_them():
    # Winograd's kernel transform has halves, which an integer dtype would round to 0
    x = jnp.arange(32).reshape(1, 4, 4, 2)
    kernel = jnp.arange(18).reshape(3, 3, 2, 1) % 4 - 1
    y = jax.jit(same_conv)(x, kernel)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, numpy_conv(x, kernel))
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

    def output_and_grads(x, kernel):
        y, vjp = jax.vjp(winograd_conv, x, kernel)
        return y, *vjp(jnp.ones_like(y))

    y, dx, dk = jax.jit(output_and_grads)(x, kernel)
    assert y.shape == (*x_shape[:3], kernel_shape[-1])
    np.testing.assert_array_equal(y, 0.0)  # a sum over no channels, or no outputs
    assert dx.shape == x_shape and dk.shape == kernel_shape
    # no images: a zero kernel gradient; no outputs: a zero input gradient (the other
    # gradient is then empty)
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_array_equal(dk, 0.0)
