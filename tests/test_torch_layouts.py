"""companion.torch_layouts against PyTorch's own layers: every layout checked by running
both frameworks on the same numbers, with shapes chosen so that a swapped axis (kh/kw,
C_in/C_out, h/w) cannot go unnoticed."""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from companion import torch_layouts

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_conv_kernel_layouts_against_both_convolutions():
    # a 3×5 kernel, 2 → 4 channels, on a 6×7 image: every axis has its own size
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 5, 2, 4)).astype(np.float32)  # HWIO
    x = rng.standard_normal((2, 6, 7, 2)).astype(np.float32)  # NHWC
    ours = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    weight = torch_layouts.conv_kernel_to_torch(kernel)  # OIHW
    assert weight.shape == (4, 2, 3, 5)
    assert weight[3, 1, 2, 4] == kernel[2, 4, 1, 3]
    theirs = F.conv2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(weight),
        padding=(1, 2),
    )  # NCHW
    np.testing.assert_allclose(
        theirs.numpy().transpose(0, 2, 3, 1), ours, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(torch_layouts.conv_kernel_from_torch(weight), kernel)


def test_flat_rows_follow_each_frameworks_flatten():
    # a (2, 3, 4) feature map: h, w and c all differ
    rng = np.random.default_rng(1)
    fmap = rng.standard_normal((5, 2, 3, 4)).astype(np.float32)  # NHWC
    kernel = rng.standard_normal((2 * 3 * 4, 6)).astype(np.float32)
    ours = fmap.reshape(5, -1) @ kernel  # NNX: flatten (h, w, c)
    weight = torch_layouts.flat_rows_to_torch(kernel, (2, 3, 4))
    nchw = torch.from_numpy(fmap.transpose(0, 3, 1, 2).copy())
    theirs = F.linear(torch.flatten(nchw, 1), torch.from_numpy(weight))
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-5, atol=1e-5)
    # the transpose alone is the classic mistake: far off, not rounding
    naive = F.linear(torch.flatten(nchw, 1), torch.from_numpy(kernel.T.copy()))
    assert np.abs(naive.numpy() - ours).max() > 0.5
    np.testing.assert_array_equal(
        torch_layouts.flat_rows_from_torch(weight, (2, 3, 4)), kernel
    )


def test_layout_helpers_refuse_wrong_shapes():
    with pytest.raises(ValueError, match=r"4 dimensions; got \(3, 3, 2\)"):
        torch_layouts.conv_kernel_to_torch(np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match=r"4 dimensions; got \(4, 2\)"):
        torch_layouts.conv_kernel_from_torch(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(24, n_out\).*got \(25, 6\)"):
        torch_layouts.flat_rows_to_torch(np.zeros((25, 6)), (2, 3, 4))
    with pytest.raises(ValueError, match=r"\(n_out, 24\).*got \(6, 23\)"):
        torch_layouts.flat_rows_from_torch(np.zeros((6, 23)), (2, 3, 4))
    with pytest.raises(ValueError, match="three positive sizes"):
        torch_layouts.flat_rows_to_torch(np.zeros((6, 6)), (2, 3))


def test_the_cnns_layers_cross_both_ways():
    rng = np.random.default_rng(2)
    for layer, shape in torch_layouts.CNN_KERNELS.items():
        kernel = rng.standard_normal(shape).astype(np.float32)
        weight = torch_layouts.cnn_kernel_to_torch(layer, kernel)
        assert weight.shape == torch_layouts.torch_shape(shape)
        assert weight.flags.c_contiguous
        np.testing.assert_array_equal(
            torch_layouts.cnn_kernel_from_torch(layer, weight), kernel
        )
    # each layer's rule: a transpose for the convolutions and dense2, the flatten's
    # reordering for dense1 (checked against PyTorch above)
    conv2 = rng.standard_normal((3, 3, 32, 64))
    np.testing.assert_array_equal(
        torch_layouts.cnn_kernel_to_torch("conv2", conv2),
        torch_layouts.conv_kernel_to_torch(conv2),
    )
    dense1 = rng.standard_normal((3136, 256))
    np.testing.assert_array_equal(
        torch_layouts.cnn_kernel_to_torch("dense1", dense1),
        torch_layouts.flat_rows_to_torch(dense1, torch_layouts.CNN_FEATURES),
    )
    dense2 = rng.standard_normal((256, 10))
    np.testing.assert_array_equal(
        torch_layouts.cnn_kernel_to_torch("dense2", dense2), dense2.T
    )
    with pytest.raises(ValueError, match=r"has layers \['conv1'.*got 'conv3'"):
        torch_layouts.cnn_kernel_to_torch("conv3", conv2)
    with pytest.raises(ValueError, match=r"conv1 of the book's CNN is \(3, 3, 1, 32\)"):
        torch_layouts.cnn_kernel_to_torch("conv1", conv2)
    with pytest.raises(ValueError, match=r"dense2 of the book's CNN is \(10, 256\)"):
        torch_layouts.cnn_kernel_from_torch("dense2", dense2)
    with pytest.raises(ValueError, match="2 \\(dense\\) or 4 \\(conv\\) dimensions"):
        torch_layouts.torch_shape((3, 3, 1))


def test_the_cnns_shapes_are_the_nnx_cnns():
    nnx = pytest.importorskip("flax.nnx")
    from companion.nnx_models import CNN

    model = nnx.eval_shape(lambda: CNN(rngs=nnx.Rngs(0)))  # shapes only
    found = {k: getattr(model, k).kernel.shape for k in torch_layouts.CNN_KERNELS}
    assert found == torch_layouts.CNN_KERNELS
    # conv2's pooled output, flattened into dense1
    assert math.prod(torch_layouts.CNN_FEATURES) == model.dense1.in_features


def test_importing_the_layouts_loads_neither_torch_nor_flax():
    code = (
        "import sys, companion.torch_layouts; "
        "print([m for m in ('torch', 'flax', 'jax') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
