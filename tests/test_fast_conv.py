from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_reference import assert_vjp_is_lax_convs, lax_conv, normal, numpy_conv
from flax import nnx

from companion.fast import rows
from companion.fast.conv import FastConv, avg_pool, fast_cnn, patches, same_conv
from companion.nnx_models import CNN


@pytest.mark.parametrize(
    ("kh", "kw", "c", "o", "h", "w"),
    [(3, 3, 1, 32, 28, 28), (3, 3, 5, 4, 7, 9), (1, 1, 3, 2, 4, 4), (5, 3, 2, 3, 6, 5)],
)
def test_same_conv_against_the_definition_in_float64(kh, kw, c, o, h, w):
    x, kernel, bias = normal(0, (2, h, w, c), (kh, kw, c, o), (o,), dtype=np.float32)
    np.testing.assert_allclose(
        jax.jit(same_conv)(x, kernel, bias),
        numpy_conv(x, kernel, bias),
        rtol=1e-5,
        atol=1e-5,
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
    # XLA's own convolution gradient, to float64 rounding. Patches × matrix (5×3 and
    # 1×3 kernels) and shifted taps (one channel in).
    monkeypatch.setattr(rows, "threads", lambda: threads)
    assert_vjp_is_lax_convs(same_conv, (b, h, w, c), (kh, kw, c, o), tol=1e-12)


@pytest.mark.parametrize(
    ("c", "winograd"),
    [(1, True), (2, True), (2, False)],  # one channel in: the shifted-taps path
)
def test_gradients_of_gradients_and_vmap_through_the_hand_written_gradient(c, winograd):
    conv = partial(same_conv, winograd=winograd)
    x, kernel = normal(4, (2, 5, 5, c), (3, 3, c, 3))

    def curvature(conv, kernel):
        # a function of the kernel through its own gradient: needs the backward pass
        # to be differentiable
        grad = jax.grad(lambda k: jnp.sum(jnp.tanh(conv(x, k))))
        return jax.grad(lambda k: jnp.sum(grad(k) ** 2))(kernel)

    def per_example(conv, kernel):  # per-example kernel gradients under vmap
        grad = jax.grad(lambda k, xi: jnp.sum(jnp.sin(conv(xi[None], k))))
        return jax.vmap(grad, in_axes=(None, 0))(kernel, x)

    with jax.enable_x64(True):
        x, kernel = jnp.asarray(x), jnp.asarray(kernel)
        for check in (curvature, per_example):
            ours = jax.jit(check, static_argnums=0)(conv, kernel)
            ref = jax.jit(check, static_argnums=0)(lax_conv, kernel)
            assert ours.dtype == jnp.float64
            np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_patches_against_the_definition():
    x = np.random.default_rng(5).normal(size=(2, 4, 5, 3))
    p = np.asarray(patches(jnp.asarray(x, jnp.float32), 3, 1))  # (2, 4, 5, 9)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)))
    for i in range(4):
        for j in range(5):
            # taps in the kernel's (di, dj, c) order
            ref = padded[:, i : i + 3, j : j + 1, :].reshape(2, -1)
            np.testing.assert_allclose(p[:, i, j], ref, rtol=1e-6)


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
        (
            lambda: same_conv(
                jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 2)), jnp.ones(3)
            ),
            r"bias must be \(2,\), one per output channel; got \(3,\)",
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


@pytest.mark.parametrize("c", [1, 2])  # shifted taps; Winograd
def test_forward_mode_is_refused_by_jax_not_silently_wrong(c):
    x, kernel = jnp.ones((1, 3, 3, c)), jnp.ones((3, 3, c, 1))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda k: same_conv(x, k), (kernel,), (kernel,))


def test_fast_conv_is_an_nnx_conv_with_the_same_outputs_and_gradients():
    (x,) = normal(2, (2, 6, 7, 3), dtype=np.float32)

    def outputs_and_grads(layer):
        def loss(layer):
            return jnp.sum(jnp.sin(layer(x)))

        return layer(x), nnx.grad(loss)(layer)

    # 3×5: patches × matrix; 3×3: Winograd by default, patches when asked
    for size, forms in (((3, 5), (True,)), ((3, 3), (True, False))):
        ref = nnx.Conv(3, 5, size, rngs=nnx.Rngs(0))
        ref.bias[...] = jnp.arange(5.0)  # a bias that is not zero
        theirs = nnx.jit(outputs_and_grads)(ref)
        for winograd in forms:
            fast = FastConv(3, 5, size, winograd=winograd, rngs=nnx.Rngs(0))
            assert isinstance(fast, nnx.Conv) and fast.winograd is winograd
            fast.bias[...] = jnp.arange(5.0)  # and the same kernel: the same draws
            ours = nnx.jit(outputs_and_grads)(fast)
            np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
            grads = zip(
                jax.tree.leaves(ours[1]), jax.tree.leaves(theirs[1]), strict=True
            )
            for a, b in grads:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for bad in ((2, 2), 3, (3,), (3, 3, 3), (3.0, 3.0), (-1, 3)):
        with pytest.raises(ValueError, match=r"two odd positive sizes \(kh, kw\)"):
            FastConv(1, 2, bad, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("winograd", [True, False])
def test_fast_cnn_is_the_chapters_cnn_computed_another_way(winograd):
    textbook = CNN(rngs=nnx.Rngs(4))
    fast = fast_cnn(rngs=nnx.Rngs(4), winograd=winograd)
    assert isinstance(fast, CNN) and type(textbook.conv1) is nnx.Conv
    assert type(fast.conv1) is FastConv and fast.conv2.winograd is winograd
    a, b = nnx.state(fast, nnx.Param), nnx.state(textbook, nnx.Param)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)  # the same parameters, drawn the same way
    (x,) = normal(0, (3, 784), dtype=np.float32)
    y = np.arange(3)

    def logits_and_grads(model):
        def loss(model):
            return -jnp.mean(jax.nn.log_softmax(model(x))[jnp.arange(3), y])

        return model(x), nnx.grad(loss)(model)

    # float32 sums in another order: agreement to rounding, far below the logits
    ours, ref = nnx.jit(logits_and_grads)(fast), nnx.jit(logits_and_grads)(textbook)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    for u, v in zip(jax.tree.leaves(ours[1]), jax.tree.leaves(ref[1]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-5)
