"""Convolution as Winograd's products or patches × matrix, and average pooling as a
reshape (chapter 6).

What the book's CNN computes, written so that XLA:CPU runs its training step fast,
inside a ``lax.scan`` too. ``jax.lax.conv_general_dilated`` computes the same numbers,
but on XLA:CPU its kernel gradient inside a ``lax.scan`` falls back to a slow generic
loop (chapter 6 measures both). :func:`same_conv` takes one of three routes:

- **Winograd** (3×3 kernels, more than one channel in: the book's second layer).
  Winograd's F(2×2, 3×3) computes each 2×2 block of outputs from the 4×4 block of input
  under it with 16 multiplications per channel pair where the direct sum takes 36: the
  input blocks and the kernel are each transformed by a small constant matrix (adds and
  halvings), multiplied point by point, and transformed back. Over a batch, the point
  by point products are 16 matrix products ``(blocks, C) @ (C, O)``, one per point of
  the 4×4 block: 4/9 of the direct convolution's multiply-adds
  (:func:`winograd_conv`). Its gradient is written by hand: the transforms' transposes
  around the products' gradients.
- **Patches × matrix** (other kernels; also 3×3 with ``winograd=False``). A stride-1
  "SAME" convolution with a ``(kh, kw, C, O)`` kernel is a matrix product: gather, for
  every pixel, the ``kh·kw·C`` values under the kernel (the *patches*,
  ``(B, H, W, kh·kw·C)``: ``kh·kw`` shifted slices of the padded image,
  :func:`patches`), and multiply by the kernel reshaped to ``(kh·kw·C, O)``. The
  kernel's gradient, ``patches^T @ g``, is written by hand (``jax.custom_vjp``):
  ``jax.grad`` writes it as a ``(O, kh·kw·C)`` product then a transpose, a layout
  XLA:CPU runs several times slower for the book's first layer (chapter 6 times both),
  and as one long sum, which runs on one core. Here: the fast layout, and the pixels
  split into one group per CPU thread, each group's sum its own product.
- **Shifted taps** (one channel in: the book's first layer). Rows of patches only
  ``kh·kw`` long make the product mostly writing and reading them; the forward pass is
  instead a sum over the taps of the shifted image times each tap's weights (one fused
  loop over the output), and the kernel's gradient still ``patches^T @ g`` by hand.

Forward-mode differentiation (``jax.jvp``) is therefore not defined through
:func:`same_conv`; ``jax.grad``, ``jax.vjp``, ``jit``, ``vmap`` and gradients of
gradients are.

Non-overlapping average pooling is a reshape and a mean, whose gradient is a broadcast,
where ``lax.reduce_window``'s is a padded scatter. :class:`FastConv` is an ``nnx.Conv``
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

__all__ = ["FastConv", "avg_pool", "patches", "same_conv", "winograd_conv"]


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
            point inputs, by Winograd's F(2×2, 3×3) (:func:`winograd_conv`);
            ``False``: as patches × matrix. The same numbers to float rounding.
            Integer inputs are always computed as patches × matrix (exactly).

    Returns:
        ``(B, H, W, O)``, in the dtype the inputs promote to.

    Examples:
        >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
        >>> same_conv(x, jnp.ones((3, 3, 1, 1)))[0, :, :, 0]  # sums of 3×3 windows
        Array([[ 8., 15., 12.],
               [21., 36., 27.],
               [20., 33., 24.]], dtype=float32)
    """
    x, kernel = _operands("same_conv", x, kernel)
    kh, kw, c, o = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel height and width must be odd; got {kh}×{kw}")
    if c == 1:
        # One channel in: a product with kh·kw-long rows is mostly memory traffic (the
        # patches are written and read for a few multiply-adds per output); the taps as
        # broadcast multiply-adds are one fused loop over the output instead.
        y = _one_channel_conv(x, kernel)
    elif winograd and (kh, kw) == (3, 3) and jnp.issubdtype(x.dtype, jnp.inexact):
        # (integers stay on the patches: Winograd's kernel transform has halves)
        y = _winograd(x, kernel)
    else:
        # (B, H, W, kh·kw·C) @ (kh·kw·C, O) -> (B, H, W, O)
        y = _rows_times_matrix(patches(x, kh, kw), kernel.reshape(kh * kw * c, o))
    return y if bias is None else y + jnp.asarray(bias)


def _operands(fn: str, x: ArrayLike, kernel: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``x`` ``(B, H, W, C)`` and ``kernel`` ``(kh, kw, C, O)`` as arrays of the dtype
    they promote to, or a ``ValueError`` naming ``fn`` and the shapes."""
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"{fn} takes x (B, H, W, C) and kernel (kh, kw, C, O); "
            f"got x {x.shape} and kernel {kernel.shape}"
        )
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"x has {x.shape[-1]} channels but the kernel expects {kernel.shape[2]}: "
            f"x {x.shape}, kernel {kernel.shape}"
        )
    dtype = jnp.result_type(x, kernel)
    return x.astype(dtype), kernel.astype(dtype)


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


# Winograd's F(2×2, 3×3). In one dimension, two outputs of a 3-tap correlation,
# y_i = Σ_k d_{i+k} g_k, from the four inputs d_0..d_3 under them:
#   y = A^T [(G g) ⊙ (B^T d)]
# four multiplications where the direct sum takes six. In two dimensions the transforms
# act on rows and columns: 16 multiplications for a 2×2 block of outputs, not 36.
# B^T (4×4) and A^T (2×4) are 0s and ±1s, so their transforms are adds, written out
# below; G (4×3) has halves, exact in every float format.
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_conv(x: ArrayLike, kernel: ArrayLike) -> jax.Array:
    """A stride-1 "SAME" convolution with a 3×3 kernel by Winograd's F(2×2, 3×3).

    The output in 2×2 blocks, each from the 4×4 block of (zero-padded) input under it:
    ``Y = Aᵀ [Σ_c (G k_{c,o} Gᵀ) ⊙ (Bᵀ X_c B)] A``, the sum over channels ``c`` being
    one ``(blocks, C) @ (C, O)`` product for each of the 16 points of the block: 4/9 of
    the direct convolution's multiply-adds, plus the transforms (adds). The same numbers
    as :func:`same_conv` with ``winograd=False`` to float rounding, which differs: the
    transforms round, and each product sums over the channels alone (chapter 6 compares
    both with float64). In float32 that difference is far below what training notices;
    in bfloat16 or float16 each transform's rounding is coarse, and the error can be a
    few times that of patches × matrix (``same_conv(..., winograd=False)`` where that
    matters). An odd ``H`` or ``W`` is padded to even, the extra row or column cut off
    again.

    Args:
        x: images ``(B, H, W, C)``, floating point.
        kernel: ``(3, 3, C, O)`` (HWIO).

    Returns:
        ``(B, H, W, O)``, in the dtype the inputs promote to.

    Raises:
        ValueError: shapes that are not ``(B, H, W, C)`` and ``(3, 3, C, O)``.
        TypeError: integer or boolean inputs (the kernel transform has halves).

    Examples:
        >>> x = jnp.ones((1, 4, 4, 2))  # two channels of ones
        >>> winograd_conv(x, jnp.ones((3, 3, 2, 1)))[0, :, :, 0]  # 2 × taps inside
        Array([[ 8., 12., 12.,  8.],
               [12., 18., 18., 12.],
               [12., 18., 18., 12.],
               [ 8., 12., 12.,  8.]], dtype=float32)
    """
    x, kernel = _operands("winograd_conv", x, kernel)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        # G's halves would round to zero in an integer dtype: silently wrong sums
        raise TypeError(
            "winograd_conv needs floating-point inputs (its kernel transform has "
            f"halves); got {x.dtype} (same_conv computes integers as patches × matrix)"
        )
    if kernel.shape[:2] != (3, 3):
        raise ValueError(
            f"winograd_conv computes 3×3 kernels; got {kernel.shape[0]}×"
            f"{kernel.shape[1]} (same_conv takes any odd size)"
        )
    return _winograd(x, kernel)


def _winograd_blocks(t: jax.Array, axis: int) -> jax.Array:
    """The 1-D input transform ``Bᵀ d`` along ``axis`` (length ``2(T+1)``, padded) of
    every 4-long window at stride 2: ``(..., 2(T+1), ...)`` → ``(..., T, 4, ...)``."""
    n = t.shape[axis] // 2 - 1  # windows
    pairs = t.reshape((*t.shape[:axis], n + 1, 2, *t.shape[axis + 1 :]))

    def row(first_pair, k):  # rows 2w + 2·first_pair + k of every window w
        window = jax.lax.slice_in_dim(pairs, first_pair, first_pair + n, axis=axis)
        return jax.lax.index_in_dim(window, k, axis + 1, keepdims=False)

    d0, d1, d2, d3 = row(0, 0), row(0, 1), row(1, 0), row(1, 1)
    return jnp.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=axis + 1)


def _winograd_blocks_transpose(u: jax.Array, axis: int) -> jax.Array:
    """The transpose of :func:`_winograd_blocks`: ``(..., T, 4, ...)`` →
    ``(..., 2(T+1), ...)``, overlapping windows' contributions added."""
    u0, u1, u2, u3 = (jax.lax.index_in_dim(u, k, axis + 1, False) for k in range(4))
    # column k of B (Bᵀ's transpose) gives input row k's share of each window
    first = jnp.stack([u0, u1 - u2 + u3], axis=axis + 1)  # rows 2w, 2w+1
    second = jnp.stack([u2 + u1 - u0, -u3], axis=axis + 1)  # rows 2w+2, 2w+3
    pad_end, pad_start = [(0, 0)] * first.ndim, [(0, 0)] * first.ndim
    pad_end[axis], pad_start[axis] = (0, 1), (1, 0)
    pairs = jnp.pad(first, pad_end) + jnp.pad(second, pad_start)  # (..., T+1, 2, ...)
    rows = 2 * pairs.shape[axis]  # not -1: a reshape cannot infer it for a size-0 array
    return pairs.reshape((*pairs.shape[:axis], rows, *pairs.shape[axis + 2 :]))


def _winograd_kernel(kernel: jax.Array) -> jax.Array:
    """``G k Gᵀ`` for every channel pair: ``(3, 3, C, O)`` → ``(16, C, O)``."""
    g = jnp.asarray(_WINOGRAD_G, kernel.dtype)  # (4, 3)
    c, o = kernel.shape[2:]
    return jnp.einsum("ai,ijco,bj->abco", g, kernel, g).reshape(16, c, o)


def _winograd_input(x: jax.Array) -> jax.Array:
    """``Bᵀ X B`` for every 4×4 block: ``(B, H, W, C)`` → ``(16, B·⌈H/2⌉·⌈W/2⌉, C)``."""
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
    u = _winograd_blocks(_winograd_blocks(padded, 1), 3)  # (B, Th, 4, Tw, 4, C)
    blocks = b * ((h + 1) // 2) * ((w + 1) // 2)  # not -1: B or C may be 0
    return u.transpose(2, 4, 0, 1, 3, 5).reshape(16, blocks, c)


def _winograd_input_transpose(u: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The transpose of :func:`_winograd_input`: ``(16, blocks, C)`` → ``shape``."""
    b, h, w, c = shape
    u = u.reshape(4, 4, b, (h + 1) // 2, (w + 1) // 2, c).transpose(2, 3, 0, 4, 1, 5)
    x = _winograd_blocks_transpose(_winograd_blocks_transpose(u, 3), 1)  # padded
    return x[:, 1 : 1 + h, 1 : 1 + w]


def _winograd_output(m: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``Aᵀ M A`` for every block: ``(16, blocks, O)`` → ``(B, H, W, O)``."""
    b, h, w, _ = shape
    th, tw, o = (h + 1) // 2, (w + 1) // 2, m.shape[-1]
    m = m.reshape(4, 4, b, th, tw, o)
    y = jnp.stack([m[0] + m[1] + m[2], m[1] - m[2] - m[3]])  # Aᵀ on rows
    y = jnp.stack([y[:, 0] + y[:, 1] + y[:, 2], y[:, 1] - y[:, 2] - y[:, 3]], 1)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(b, 2 * th, 2 * tw, o)  # (2, 2) blocks
    return y[:, :h, :w]


def _winograd_output_transpose(g: jax.Array) -> jax.Array:
    """The transpose of :func:`_winograd_output`: ``(B, H, W, O)`` → ``(16, blocks,
    O)``."""
    b, h, w, o = g.shape
    g = jnp.pad(g, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    g = g.reshape(b, (h + 1) // 2, 2, (w + 1) // 2, 2, o)
    y0, y1 = g[:, :, 0], g[:, :, 1]  # (B, Th, Tw, 2, O): the block's two rows
    rows = jnp.stack([y0, y0 + y1, y0 - y1, -y1])  # A on rows: (4, B, Th, Tw, 2, O)
    c0, c1 = rows[..., 0, :], rows[..., 1, :]
    blocks = b * ((h + 1) // 2) * ((w + 1) // 2)  # not -1: B or O may be 0
    return jnp.stack([c0, c0 + c1, c0 - c1, -c1], 1).reshape(16, blocks, o)


@jax.custom_vjp
def _winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _winograd_fwd(x, kernel)[0]


def _winograd_fwd(x, kernel):
    u, v = _winograd_input(x), _winograd_kernel(kernel)  # (16, P, C), (16, C, O)
    y = _winograd_output(jnp.einsum("xpc,xco->xpo", u, v), x.shape)
    return y, (u, v, x.shape)


def _winograd_bwd(residuals, g):
    # Every step is linear: the transposes of the transforms around the gradients of
    # the 16 products. (jax.grad of the forward pass gets the same numbers, but
    # transposes the strided block slicing as scatters, several times slower.)
    u, v, shape = residuals
    dm = _winograd_output_transpose(g)  # (16, P, O)
    du = jnp.einsum("xpo,xco->xpc", dm, v)  # (16, P, C)
    dv = jnp.einsum("xpc,xpo->xco", u, dm)  # (16, C, O)
    c, o = v.shape[1:]
    gm = jnp.asarray(_WINOGRAD_G, v.dtype)
    dk = jnp.einsum("ai,abco,bj->ijco", gm, dv.reshape(4, 4, c, o), gm)
    return _winograd_input_transpose(du, shape), dk


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


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
    its gradient stays fast inside ``lax.scan`` (which ``companion.nnx_training.fit``
    uses to run many steps per call), where ``lax.conv``'s kernel gradient does not.

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
        kernel_size = sizes
        super().__init__(
            in_features,
            out_features,
            kernel_size,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            use_bias=use_bias,
        )
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
