"""Independent references for the convolutions of companion.fast: the definition in
float64 numpy, and XLA's own convolution and its gradients in float64."""

import jax
import jax.numpy as jnp
import numpy as np


def normal(seed, *shapes, dtype=np.float64):
    """Standard normal arrays of the given shapes (numpy's generator: nothing for XLA
    to compile, unlike jax.random for every new shape)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def numpy_conv(x, kernel, bias=None):
    """A stride-1 "SAME" convolution in float64, written from the definition: every
    output pixel, every kernel tap."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    b, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    y = np.zeros((b, h, w, o))
    if bias is not None:
        y += np.asarray(bias, np.float64)
    for i in range(h):
        for j in range(w):
            window = padded[:, i : i + kh, j : j + kw, :]  # (B, kh, kw, C)
            y[:, i, j, :] += np.einsum("bhwc,hwco->bo", window, kernel)
    return y


def lax_conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def assert_vjp_is_lax_convs(conv, x_shape, kernel_shape, tol):
    """conv's output and both gradients equal lax.conv's in float64, to ``tol`` (one
    jitted program each: compiled once, not op by op)."""

    def output_and_grads(conv, x, kernel, g):
        y, vjp = jax.vjp(conv, x, kernel)
        return y, *vjp(g)

    x, kernel, g = normal(3, x_shape, kernel_shape, (*x_shape[:3], kernel_shape[-1]))
    with jax.enable_x64(True):
        x, kernel, g = (jnp.asarray(a, jnp.float64) for a in (x, kernel, g))
        ours = jax.jit(output_and_grads, static_argnums=0)(conv, x, kernel, g)
        ref = jax.jit(output_and_grads, static_argnums=0)(lax_conv, x, kernel, g)
        for a, b in zip(ours, ref, strict=True):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
