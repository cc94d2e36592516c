"""Convolution as patches × matrix or shifted taps, average pooling as a reshape, and
chapter 6's CNN computed that way (:func:`fast_cnn`): an opt-in CPU speed path.

``jax.lax.conv_general_dilated`` computes the same numbers, but on XLA:CPU its kernel
gradient inside a ``lax.scan`` falls back to a slow generic loop (the performance
appendix measures both). :func:`same_conv` takes one of three routes:

- **Winograd** (3×3 kernels, more than one channel in: the book's second layer):
  :func:`companion.fast.winograd.winograd_conv`, 4/9 of the multiply-adds.
- **Patches × matrix** (other kernels; 3×3 with ``winograd=False``): every pixel's
  ``kh·kw·C`` values under the kernel (:func:`patches`) times the kernel reshaped to
  ``(kh·kw·C, O)``; the kernel's gradient, ``patches^T @ g``, written by hand
  (``jax.custom_vjp``) in the layout XLA:CPU runs fast, one group of pixels per thread.
- **Shifted taps** (one channel in: the book's first layer): the shifted image times
  each tap's weights, summed in one fused loop over the output.

``jax.grad``, ``jax.vjp``, ``jit``, ``vmap`` and gradients of gradients go through
:func:`same_conv`; forward mode (``jax.jvp``) does not. :func:`avg_pool` is a reshape
and a mean, whose gradient is a broadcast (``lax.reduce_window``'s: a padded scatter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from companion.fast import rows
from companion.fast.winograd import conv_operands, winograd_conv
from companion.nnx_models import CNN

__all__ = ["FastConv", "avg_pool", "fast_cnn", "patches", "same_conv"]


def same_conv(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    winograd: bool = True,
) -> jax.Array:
    """A stride-1, zero-padded ("SAME") 2-D convolution, by Winograd's products (3×3),
    patches × matrix or shifted taps (one channel in): see the module's notes.

    ``y[b, i, j, o] = Σ_{di, dj, c} x[b, i + di − kh//2, j + dj − kw//2, c] ·
    kernel[di, dj, c, o] + bias[o]`` (zero outside the image): the same as
    ``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` in NHWC/HWIO layout.

    Args:
        x: images ``(B, H, W, C)``.
        kernel: ``(kh, kw, C, O)`` (HWIO, as ``nnx.Conv`` stores it), ``kh`` and ``kw``
            odd.
        bias: ``(O,)`` or ``None``.
        winograd: compute a 3×3 kernel with more than one channel in, on floating
            point inputs, by Winograd's F(2×2, 3×3); ``False``: as patches × matrix.
            The same numbers to float rounding. Integers: patches × matrix (exact).

    Returns ``(B, H, W, O)``, in the dtype the inputs promote to.

    Examples:
        >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
        >>> same_conv(x, jnp.ones((3, 3, 1, 1)))[0, :, :, 0]  # sums of 3×3 windows
        Array([[ 8., 15., 12.],
               [21., 36., 27.],
               [20., 33., 24.]], dtype=float32)
    """
    x, kernel = conv_operands("same_conv", x, kernel)
    kh, kw, c, o = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel height and width must be odd; got {kh}×{kw}")
    if bias is not None and jnp.shape(bias) != (o,):
        raise ValueError(
            f"bias must be ({o},), one per output channel; got {jnp.shape(bias)}"
        )
    if c == 1:
        # One channel in: a product with kh·kw-long rows is mostly memory traffic (the
        # patches are written and read for a few multiply-adds per output); the taps as
        # broadcast multiply-adds are one fused loop over the output instead.
        y = _one_channel_conv(x, kernel)
    elif winograd and (kh, kw) == (3, 3) and jnp.issubdtype(x.dtype, jnp.inexact):
        # (integers stay on the patches: Winograd's kernel transform has halves)
        y = winograd_conv(x, kernel)
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
    return rows @ matrix  # (..., K) @ (K, O) -> (..., O)


def _rows_times_matrix_bwd(residuals, g):
    rows, matrix = residuals
    return g @ matrix.T, _pixel_sum(rows, g)


_rows_times_matrix.defvjp(lambda r, m: (r @ m, (r, m)), _rows_times_matrix_bwd)


def _pixel_sum(patch_rows: jax.Array, g: jax.Array) -> jax.Array:
    """``patch_rows^T @ g`` summed over every pixel: ``(..., K)``, g ``(..., O)`` →
    ``(K, O)``, the kernel's gradient (flattened)."""
    k, o = patch_rows.shape[-1], g.shape[-1]
    n = g.size // o  # B·H·W pixels
    # One group of pixels per thread (gcd: a group count that divides n), each group's
    # sum its own product: a single long sum runs on one core.
    groups = math.gcd(n, rows.threads())
    per_group = jnp.einsum(
        "gnk,gno->gko",
        patch_rows.reshape(groups, n // groups, k),
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


def _one_channel_conv_bwd(residuals, g):
    x, kernel = residuals
    kh, kw, _, _ = kernel.shape
    # The input's gradient as jax.grad writes it (shifted adds). The kernel's is
    # patches^T @ g, where jax.grad would write one reduction over the whole output
    # gradient per tap (kh·kw passes over it).
    x_grad = jax.vjp(lambda x: _shifted_taps(x, kernel), x)[1](g)[0]
    return x_grad, _pixel_sum(patches(x, kh, kw), g).reshape(kernel.shape)


_one_channel_conv.defvjp(
    lambda x, k: (_shifted_taps(x, k), (x, k)), _one_channel_conv_bwd
)


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


class FastConv(nnx.Conv):
    """An ``nnx.Conv`` (stride 1, "SAME" padding) computed by :func:`same_conv`:
    Winograd's products for a 3×3 kernel, patches × matrix for other sizes (or with
    ``winograd=False``), shifted taps for one channel in.

    The same parameters as ``nnx.Conv`` (``kernel`` ``(kh, kw, C_in, C_out)``, HWIO;
    ``bias`` ``(C_out,)``) and the same outputs, through :func:`same_conv`: on XLA:CPU
    its gradient stays fast inside ``lax.scan`` (which
    :func:`companion.fast.nnx_loop.fast_fit` uses to run many steps per call), where
    ``lax.conv``'s kernel gradient does not.

    Args:
        in_features, out_features: channels in and out.
        kernel_size: ``(kh, kw)``, both odd.
        winograd: as for :func:`same_conv` (``False``: patches × matrix).
        rngs, dtype, param_dtype, use_bias: as for ``nnx.Conv``.

    Examples:
        >>> conv = FastConv(1, 4, (3, 3), rngs=nnx.Rngs(0))
        >>> conv(jnp.ones((2, 5, 5, 1))).shape
        (2, 5, 5, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int] = (3, 3),
        *,
        winograd: bool = True,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        use_bias: bool = True,
    ):
        # (nnx.Conv reads a bare int as a 1-D kernel: refused here, not guessed)
        sizes = tuple(kernel_size) if isinstance(kernel_size, Sequence) else ()
        if len(sizes) != 2 or any(
            not isinstance(k, int) or k < 1 or k % 2 == 0 for k in sizes
        ):
            raise ValueError(
                "kernel_size must be two odd positive sizes (kh, kw); "
                f"got {kernel_size!r}"
            )
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias)
        super().__init__(in_features, out_features, sizes, **kw)
        self.winograd = bool(winograd)

    def __call__(self, x: ArrayLike) -> jax.Array:
        """``x`` ``(B, H, W, C_in)`` → ``(B, H, W, C_out)``."""
        x = jnp.asarray(x)
        kernel = self.kernel[...]
        # nnx.Conv's dtype rule: the layer's dtype, else what x and kernel promote to
        dtype = self.dtype or jnp.result_type(x, kernel)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return same_conv(
            x.astype(dtype), kernel.astype(dtype), bias, winograd=self.winograd
        )


class _FastCNN(CNN):
    # chapter 6's CNN: its convolutions computed by FastConv, its pooling by a reshape
    def __init__(self, *, rngs, winograd, dtype, param_dtype):
        super().__init__(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        for name in ("conv1", "conv2"):
            conv = getattr(self, name)
            fast = FastConv(
                conv.in_features, conv.out_features, conv.kernel_size,
                winograd=winograd, rngs=nnx.Rngs(0), dtype=dtype,
                param_dtype=param_dtype,
            )  # fmt: skip
            nnx.update(fast, nnx.state(conv))  # the parameters CNN drew from rngs
            setattr(self, name, fast)

    def _pool(self, x: jax.Array) -> jax.Array:
        return avg_pool(x)


def fast_cnn(
    *,
    rngs: nnx.Rngs,
    winograd: bool = True,
    dtype: jnp.dtype | None = None,
    param_dtype: jnp.dtype = jnp.float32,
) -> CNN:
    """Chapter 6's :class:`companion.nnx_models.CNN` with its two convolutions computed
    by :class:`FastConv` and its pooling by :func:`avg_pool`: the same parameters (drawn
    from ``rngs`` as ``CNN`` draws them) and the same function, to float32 rounding.

    A ``CNN`` (the PyTorch bridge, ``companion.diagnose`` and the training loops take
    it as they take the chapter's). ``winograd``: as for :func:`same_conv` (``False``:
    the second convolution as patches × matrix); ``dtype``, ``param_dtype``: as for
    ``CNN``.

    Examples:
        >>> model = fast_cnn(rngs=nnx.Rngs(0))
        >>> isinstance(model, CNN), type(model.conv2).__name__
        (True, 'FastConv')
        >>> model(jnp.zeros((2, 784))).shape
        (2, 10)
    """
    return _FastCNN(rngs=rngs, winograd=winograd, dtype=dtype, param_dtype=param_dtype)
