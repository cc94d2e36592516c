"""A 3×3 convolution by Winograd's F(2×2, 3×3), with a hand-written gradient: an
opt-in CPU speed path (the book's CNN's second layer, :mod:`companion.fast.conv`).

Winograd's F(2×2, 3×3) computes each 2×2 block of outputs from the 4×4 block of input
under it with 16 multiplications per channel pair where the direct sum takes 36: the
input blocks and the kernel are each transformed by a small constant matrix (adds and
halvings), multiplied point by point, and transformed back. Over a batch, the point by
point products are 16 matrix products ``(blocks, C) @ (C, O)``, one per point of the
4×4 block: 4/9 of the direct convolution's multiply-adds (:func:`winograd_conv`).

Every step is linear, so the gradient is written by hand (``jax.custom_vjp``): the
transforms' transposes around the products' gradients. ``jax.grad`` of the forward pass
gets the same numbers, but transposes the strided block slicing as scatters, several
times slower on XLA:CPU. Forward-mode differentiation (``jax.jvp``) is therefore not
defined through it; ``jax.grad``, ``jax.vjp``, ``jit``, ``vmap`` and gradients of
gradients are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["winograd_conv"]


def conv_operands(
    fn: str, x: ArrayLike, kernel: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """``x`` ``(B, H, W, C)`` and ``kernel`` ``(kh, kw, C, O)`` as arrays of the dtype
    they promote to, or a ``ValueError`` naming ``fn`` and the shapes (the checks every
    convolution of :mod:`companion.fast` starts with)."""
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
    as :func:`companion.fast.conv.same_conv` with ``winograd=False`` to float rounding,
    which differs: the transforms round, and each product sums over the channels alone
    (the tests compare both with a float64 reference). In float32 that difference is far
    below what training notices; in bfloat16 or float16 each transform's rounding is
    coarse, and the error can be a few times that of patches × matrix
    (``same_conv(..., winograd=False)`` where that matters). An odd ``H`` or ``W`` is
    padded to even, the extra row or column cut off again.

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
    x, kernel = conv_operands("winograd_conv", x, kernel)
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
