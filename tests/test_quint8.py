"""The int8 input boundary (ops/quint8.py): the native quantise-and-interleave kernel gives
quantize_per_tensor's bytes, channels-last, and the torch operation stands in wherever it does not
apply."""

from __future__ import annotations

import pytest
import torch

from alexnet_zoo.ops.kernels import load_kernel, native_enabled
from alexnet_zoo.ops.quint8 import quantize_input

native = pytest.mark.skipif(not native_enabled() or load_kernel("quantize") is None,
                            reason="no native kernels here (ALEXNET_ZOO_NATIVE=0 or no C compiler)")


@native
@pytest.mark.parametrize("shape", [(2, 3, 227, 227), (1, 3, 5, 7), (3, 1, 33, 40), (2, 4, 64, 65)])
@pytest.mark.parametrize("scale, zero_point", [(0.8734, 114), (0.5, 128), (0.0123, 3), (2.71828, 250), (1.0, 0)])
def test_native_bytes_are_quantize_per_tensor_bytes(shape, scale, zero_point):
    torch.manual_seed(0)
    x = torch.randn(shape) * 120
    flat = x.view(-1)  # exact ties, both signs, and values far outside the range
    ties = (torch.randint(-300, 300, (min(2000, flat.numel()),)).float() + 0.5) * scale
    flat[:len(ties)] = ties
    flat[-4:] = torch.tensor([0.0, -0.0, 1e6, -1e6])
    y = quantize_input(x, scale, zero_point)
    ref = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == x.shape
    assert (y.q_scale(), y.q_zero_point(), y.dtype) == (ref.q_scale(), ref.q_zero_point(), torch.quint8)
    assert torch.equal(y.int_repr(), ref.int_repr())


@pytest.mark.parametrize("make", [
    lambda: torch.randn(1, 16, 8, 8) * 10,  # more channels than the kernel takes
    lambda: (torch.randn(1, 3, 8, 8) * 10).contiguous(memory_format=torch.channels_last),  # not NCHW-contiguous
    lambda: torch.randn(3, 8, 8) * 10,  # not a batch
])
def test_other_inputs_take_the_torch_operation(make):
    x = make()
    y = quantize_input(x, 0.25, 10)
    ref = torch.quantize_per_tensor(x.float(), 0.25, 10, torch.quint8)
    assert torch.equal(y.int_repr(), ref.int_repr()) and y.stride() == ref.stride()


def test_switched_off_and_traced_it_is_the_torch_operation(monkeypatch):
    x = torch.randn(2, 3, 16, 16) * 30
    ref = torch.quantize_per_tensor(x, 0.3, 20, torch.quint8)
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    y = quantize_input(x, 0.3, 20)
    assert y.is_contiguous() and torch.equal(y.int_repr(), ref.int_repr())
    monkeypatch.delenv("ALEXNET_ZOO_NATIVE")
    traced = torch.jit.trace(lambda t: quantize_input(t, 0.3, 20).dequantize(), x)
    assert torch.equal(traced(x), ref.dequantize())


@pytest.mark.parametrize("native_on", [True, False])
def test_a_batch_holding_nan_is_refused_and_counted(native_on, monkeypatch):
    """NaN has no quint8 value (torch writes 0 or 255): the int8 model would answer for a picture it
    never saw. Both paths refuse the batch and say how many values were NaN."""
    if native_on and (not native_enabled() or load_kernel("quantize") is None):
        pytest.skip("no native kernels here")
    if not native_on:
        monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    x = torch.randn(2, 3, 40, 41) * 30
    x[1, 2, 5, 7] = x[0, 0, 39, 40] = float("nan")
    x[0, 1, 0, 0] = float("inf")  # infinities saturate, as large values do
    with pytest.raises(ValueError, match=r"holds 2 NaN value\(s\)"):
        quantize_input(x, 0.3, 20)
    x[1, 2, 5, 7] = x[0, 0, 39, 40] = 0.0
    assert quantize_input(x, 0.3, 20).int_repr()[0, 1, 0, 0] == 255


def test_the_int8_head_refuses_a_pool5_map_holding_nan():
    from alexnet_zoo import alexnet
    from alexnet_zoo.deploy.quantize import quantize

    torch.manual_seed(0)
    q = quantize(alexnet(num_classes=3, hidden=64).eval(), [torch.randn(2, 3, 227, 227) * 50], progress=False)
    pool5 = torch.rand(2, 256, 6, 6)
    assert q.forward_head(pool5).shape == (2, 3)
    pool5[1, 3, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="holds 1 NaN"):
        q.forward_head(pool5)


def _blocks_reference(x: torch.Tensor, scale: float, zero_point: int, kernel: int, stride: int,
                      padding: int) -> torch.Tensor:
    """quantize_per_tensor's bytes laid out as (N, HB, WB, stride^2 C) by torch indexing."""
    from alexnet_zoo.ops.quint8 import block_geometry

    n, c, h, w = x.shape
    hb, wb = block_geometry(h, kernel, stride, padding)[0], block_geometry(w, kernel, stride, padding)[0]
    q = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()
    canvas = torch.full((n, c, max(hb * stride, h + padding), max(wb * stride, w + padding)), zero_point,
                        dtype=torch.uint8)
    canvas[:, :, padding:padding + h, padding:padding + w] = q
    canvas = canvas[:, :, :hb * stride, :wb * stride].reshape(n, c, hb, stride, wb, stride)
    return canvas.permute(0, 2, 4, 3, 5, 1).reshape(n, hb, wb, stride * stride * c)


@native
@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 227, 227), 11, 4, 0),  # the paper's conv1
    ((1, 3, 224, 224), 11, 4, 2),  # torchvision's
    ((2, 3, 235, 251), 11, 4, 2),  # odd sides: the last rows and columns are cropped or padded
    ((1, 1, 11, 13), 11, 4, 0), ((1, 4, 30, 29), 5, 2, 1), ((1, 3, 40, 40), 7, 3, 3),
])
def test_space_to_depth_bytes_are_quantize_per_tensor_bytes_rearranged(shape, kernel, stride, padding):
    from alexnet_zoo.ops.quint8 import blocks_apply, quantize_input_blocks

    torch.manual_seed(0)
    x = torch.randn(shape) * 120
    flat = x.view(-1)
    ties = min(500, flat.numel())
    flat[:ties] = (torch.randint(-300, 300, (ties,)).float() + 0.5) * 0.8734  # exact ties
    assert blocks_apply(x, kernel, stride, padding)
    assert not blocks_apply(x[..., : kernel - 2 * padding - 1].contiguous(), kernel, stride, padding)  # no output
    assert not blocks_apply(torch.zeros(1, shape[1], 40, 1100), kernel, stride, padding)  # rows past its buffer
    y = quantize_input_blocks(x, 0.8734, 114, kernel, stride, padding)
    assert y.is_contiguous(memory_format=torch.channels_last) and (y.q_scale(), y.q_zero_point()) == (0.8734, 114)
    assert torch.equal(y.int_repr().permute(0, 2, 3, 1), _blocks_reference(x, 0.8734, 114, kernel, stride, padding))
    x[0, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="holds 1 NaN"):
        quantize_input_blocks(x, 0.8734, 114, kernel, stride, padding)


@native
@pytest.mark.parametrize("arch", ["alexnet", "alexnet_owt"])
def test_int8_conv1_in_space_to_depth_form_gives_the_direct_convolutions_bytes(arch, monkeypatch):
    """conv1 runs as a 3x3 convolution of 48-channel blocks where the native kernel writes them: the
    same integers meet the same weights, so its output must equal the 11x11 stride-4 one exactly."""
    import alexnet_zoo
    from alexnet_zoo.deploy.quantize import quantize

    torch.manual_seed(0)
    fp32 = getattr(alexnet_zoo, arch)().eval()
    side = fp32.preprocessing.crop
    q = quantize(fp32, [torch.randn(4, 3, side, side) * 50], progress=False)
    for shape in ((3, 3, side, side), (2, 3, 235, 251)):
        x = torch.randn(shape) * 50
        with torch.inference_mode():
            blocks, conv1 = q.conv1_input(x)
            assert blocks.shape[1] == 48 and conv1 is not q.packed_layers()["conv1"]
            direct = q.packed_layers()["conv1"](torch.quantize_per_tensor(x, *q._qparams("input"), torch.quint8))
            assert torch.equal(conv1(blocks).int_repr(), direct.int_repr())
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")  # no native kernels: the direct form, same model
    assert q.conv1_input(x)[1] is q.packed_layers()["conv1"]
