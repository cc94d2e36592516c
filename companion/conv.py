"""Convolution as patches × matrix, and average pooling as a reshape (chapter 6).

What the book's CNN computes, written so that XLA:CPU runs its training step fast,
inside a ``lax.scan`` too. A stride-1 "SAME" convolution with a ``(kh, kw, C, O)``
kernel is a matrix product: gather, for every pixel, the ``kh·kw·C`` values under the
kernel (the *patches*, ``(B, H, W, kh·kw·C)``: ``kh·kw`` shifted slices of the padded
image, :func:`patches`), and multiply by the kernel reshaped to ``(kh·kw·C, O)``. The
backward pass is matrix products and shifted adds too. ``jax.lax.conv_general_dilated``
computes the same numbers, but on XLA:CPU its kernel gradient inside a ``lax.scan``
falls back to a slow generic loop (chapter 6 measures both).

The product's gradient is written by hand (``jax.custom_vjp``), for the kernel's part:
``patches^T @ g``, a sum over every pixel of every image. ``jax.grad`` writes it as a
``(O, kh·kw·C)`` product then a transpose, a layout XLA:CPU runs several times
slower than ``(kh·kw·C, O)`` for the book's first layer (chapter 6 times both), and as
one long sum, which runs on one core. Here: the fast layout,
and the pixels split into one group per CPU thread, each group's sum its own product.
Forward-mode differentiation (``jax.jvp``) is therefore not defined through
:func:`same_conv`; ``jax.grad``, ``jax.vjp``, ``jit``, ``vmap`` and gradients of
gradients are.

An image with one channel (the book's first layer) is the exception: its rows of
patches are only ``kh·kw`` long, so the product is mostly writing and reading them.
There the forward pass is a sum over the taps of the shifted image times each tap's
weights (one fused loop over the output), and the kernel's gradient is still
``patches^T @ g`` by hand: ``jax.grad`` of that sum would reduce the whole output
gradient once per tap.

Non-overlapping average pooling is a reshape and a mean, whose gradient is a broadcast,
where ``lax.reduce_window``'s is a padded scatter. :class:`PatchConv` is an ``nnx.Conv``
(the same parameters) that computes this way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from companion import cpu

__all__ = ["PatchConv", "avg_pool", "patches", "same_conv"]


def same_conv(
    x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None
) -> jax.Array:
    """A stride-1, zero-padded ("SAME") 2-D convolution, as patches × matrix.

    ``y[b, i, j, o] = Σ_{di, dj, c} x[b, i + di − kh//2, j + dj − kw//2, c] ·
    kernel[di, dj, c, o] + bias[o]`` (zero outside the image): the same as
    ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` in NHWC/HWIO layout.

    Args:
        x: images ``(B, H, W, C)``.
        kernel: ``(kh, kw, C, O)`` (HWIO, as ``nnx.Conv`` stores it), ``kh`` and ``kw``
            odd.
        bias: ``(O,)`` or ``None``.

    Returns:
        ``(B, H, W, O)``, in the dtype the inputs promote to.

    Examples:
        >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
        >>> same_conv(x, jnp.ones((3, 3, 1, 1)))[0, :, :, 0]  # sums of 3×3 windows
        Array([[ 8., 15., 12.],
               [21., 36., 27.],
               [20., 33., 24.]], dtype=float32)
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            "same_conv takes x (B, H, W, C) and kernel (kh, kw, C, O); "
            f"got x {x.shape} and kernel {kernel.shape}"
        )
    kh, kw, c, o = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel height and width must be odd; got {kh}×{kw}")
    if x.shape[-1] != c:
        raise ValueError(
            f"x has {x.shape[-1]} channels but the kernel expects {c}: "
            f"x {x.shape}, kernel {kernel.shape}"
        )
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if c == 1:
        # One channel in: a product with kh·kw-long rows is mostly memory traffic (the
        # patches are written and read for a few multiply-adds per output); the taps as
        # broadcast multiply-adds are one fused loop over the output instead.
        y = _one_channel_conv(x, kernel)
    else:
        # (B, H, W, kh·kw·C) @ (kh·kw·C, O) -> (B, H, W, O)
        y = _rows_times_matrix(patches(x, kh, kw), kernel.reshape(kh * kw * c, o))
    return y if bias is None else y + jnp.asarray(bias)


def patches(x: ArrayLike, kh: int, kw: int) -> jax.Array:
    """Every pixel's ``kh × kw`` window, in the kernel's ``(di, dj, c)`` order:
    ``(B, H, W, C)`` → ``(B, H, W, kh·kw·C)``, zeros outside the image (``kh``, ``kw``
    odd).

    ``same_conv(x, kernel) == patches(x, kh, kw) @ kernel.reshape(kh·kw·C, O)``.

    Examples:
        >>> patches(jnp.arange(4.0).reshape(1, 2, 2, 1), 3, 3)[0, 0, 0]  # top-left
        Array([0., 0., 0., 0., 0., 1., 0., 2., 3.], dtype=float32)
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"patches takes x (B, H, W, C); got {x.shape}")
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"kernel height and width must be odd and positive; got {kh}×{kw}"
        )
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    return jnp.concatenate(
        [padded[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)],
        axis=-1,
    )


@jax.custom_vjp
def _rows_times_matrix(rows: jax.Array, matrix: jax.Array) -> jax.Array:
    # rows (..., K) @ matrix (K, O) -> (..., O)
    return rows @ matrix


def _rows_times_matrix_fwd(rows, matrix):
    return rows @ matrix, (rows, matrix)


def _rows_times_matrix_bwd(residuals, g):
    rows, matrix = residuals
    return g @ matrix.T, _pixel_sum(rows, g)


_rows_times_matrix.defvjp(_rows_times_matrix_fwd, _rows_times_matrix_bwd)


def _pixel_sum(rows: jax.Array, g: jax.Array) -> jax.Array:
    """``rows^T @ g`` summed over every pixel: rows ``(..., K)``, g ``(..., O)`` →
    ``(K, O)``, the kernel's gradient (flattened)."""
    k, o = rows.shape[-1], g.shape[-1]
    n = g.size // o  # B·H·W pixels
    # One group of pixels per thread (gcd: a group count that divides n), each group's
    # sum its own product: a single long sum runs on one core.
    groups = math.gcd(n, cpu.threads())
    per_group = jnp.einsum(
        "gnk,gno->gko",
        rows.reshape(groups, n // groups, k),
        g.reshape(groups, n // groups, o),
    )
    return per_group.sum(0)


def _shifted_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The convolution of a one-channel image as a sum over the kernel's taps of the
    shifted image times that tap's weights: ``(B, H, W, 1)`` → ``(B, H, W, O)``."""
    kh, kw, _, _ = kernel.shape
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    y = padded[:, :h, :w, :] * kernel[0, 0]  # (B, H, W, 1) * (1, O) -> (B, H, W, O)
    for i in range(kh):
        for j in range(kw):
            if i or j:
                y = y + padded[:, i : i + h, j : j + w, :] * kernel[i, j]
    return y


@jax.custom_vjp
def _one_channel_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _shifted_taps(x, kernel)


def _one_channel_conv_fwd(x, kernel):
    return _shifted_taps(x, kernel), (x, kernel)


def _one_channel_conv_bwd(residuals, g):
    x, kernel = residuals
    kh, kw, _, _ = kernel.shape
    # The input's gradient as jax.grad writes it (shifted adds). The kernel's is
    # patches^T @ g, where jax.grad would write one reduction over the whole output
    # gradient per tap (kh·kw passes over it).
    x_grad = jax.vjp(lambda x: _shifted_taps(x, kernel), x)[1](g)[0]
    return x_grad, _pixel_sum(patches(x, kh, kw), g).reshape(kernel.shape)


_one_channel_conv.defvjp(_one_channel_conv_fwd, _one_channel_conv_bwd)


def avg_pool(x: ArrayLike, size: int = 2) -> jax.Array:
    """Average over non-overlapping ``size × size`` windows: ``(B, H, W, C)`` →
    ``(B, H/size, W/size, C)``.

    The same as ``nnx.avg_pool(x, (size, size), strides=(size, size))`` when ``size``
    divides ``H`` and ``W`` (it must).

    Examples:
        >>> avg_pool(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
        Array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"avg_pool takes x (B, H, W, C); got {x.shape}")
    b, h, w, c = x.shape
    if size < 1 or h % size or w % size:
        raise ValueError(
            f"pool size {size} must be positive and divide the height and width; "
            f"got x {x.shape}"
        )
    return x.reshape(b, h // size, size, w // size, size, c).mean(axis=(2, 4))


class PatchConv(nnx.Conv):
    """An ``nnx.Conv`` (stride 1, "SAME" padding) computed as patches × matrix (as
    shifted taps for one channel in).

    The same parameters as ``nnx.Conv`` (``kernel`` ``(kh, kw, C_in, C_out)``, HWIO;
    ``bias`` ``(C_out,)``) and the same outputs, through :func:`same_conv`: on XLA:CPU
    its gradient stays fast inside ``lax.scan`` (which ``companion.nnx_training.fit``
    uses to run many steps per call), where ``lax.conv``'s kernel gradient does not.

    Args:
        in_features, out_features: channels in and out.
        kernel_size: ``(kh, kw)``, both odd.
        rngs, dtype, param_dtype, use_bias: as for ``nnx.Conv``.

    Examples:
        >>> conv = PatchConv(1, 4, (3, 3), rngs=nnx.Rngs(0))
        >>> conv(jnp.ones((2, 5, 5, 1))).shape
        (2, 5, 5, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int] = (3, 3),
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        use_bias: bool = True,
    ):
        kernel_size = tuple(kernel_size)
        if len(kernel_size) != 2 or any(k < 1 or k % 2 == 0 for k in kernel_size):
            raise ValueError(
                f"kernel_size must be two odd positive sizes; got {kernel_size}"
            )
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            use_bias=use_bias,
        )

    def __call__(self, x: ArrayLike) -> jax.Array:
        """``x`` ``(B, H, W, C_in)`` → ``(B, H, W, C_out)``."""
        x = jnp.asarray(x)
        kernel = self.kernel[...]
        # nnx.Conv's dtype rule: the layer's dtype, else what x and kernel promote to
        dtype = self.dtype or jnp.result_type(x, kernel)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return same_conv(x.astype(dtype), kernel.astype(dtype), bias)
