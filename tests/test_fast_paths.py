"""The CPU fast paths (oneDNN prepacking, Winograd, fused native kernels) against plain torch."""

import pytest
import torch
import torch.nn.functional as F

from alexnet_zoo.ops import onednn, winograd
from alexnet_zoo.ops.kernels import load_kernel


@pytest.mark.parametrize("size", [(13, 13), (12, 10), (7, 9)])
@pytest.mark.parametrize("relu", [True, False])
def test_winograd_equals_direct_convolution(size, relu):
    conv = torch.nn.Conv2d(32, 48, 3, padding=1).eval()
    x = torch.randn(16, 32, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert winograd.applies(conv, x)
        y = winograd.conv2d(conv, x, relu)
        ref = conv(x)
    ref = ref.relu() if relu else ref
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_winograd_applies_only_where_it_wins():
    x = torch.randn(8, 32, 13, 13)
    with torch.inference_mode():
        assert not winograd.applies(torch.nn.Conv2d(32, 32, 3, padding=1, groups=2), x)  # grouped
        assert not winograd.applies(torch.nn.Conv2d(32, 32, 5, padding=2), x)
        assert not winograd.applies(torch.nn.Conv2d(32, 32, 3, padding=1), x[:1])  # too few tiles
        with torch.autocast("cpu", torch.bfloat16):
            assert not winograd.applies(torch.nn.Conv2d(32, 32, 3, padding=1), x)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    assert not winograd.applies(conv, x)  # autograd wants the plain path
    with torch.no_grad():
        assert winograd.applies(conv, x)


def test_prepared_weights_follow_parameter_changes():
    conv = torch.nn.Conv2d(32, 48, 3, padding=1).eval()
    x = torch.randn(8, 32, 13, 13)
    with torch.inference_mode():
        first = onednn.conv2d(conv, x, relu=False)
    with torch.no_grad():
        conv.weight.mul_(2.0)  # in place: the version counter moves
    with torch.inference_mode():
        assert torch.allclose(onednn.conv2d(conv, x, relu=False), conv(x), atol=1e-5)
        assert torch.allclose(winograd.conv2d(conv, x, relu=False), conv(x), atol=1e-4)
    conv.weight = torch.nn.Parameter(torch.zeros_like(conv.weight))  # replaced outright
    with torch.inference_mode():
        assert torch.allclose(onednn.conv2d(conv, x, relu=False), conv.bias[:, None, None].expand_as(first))


def test_linear_fast_path():
    fc = torch.nn.Linear(64, 40).eval()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        assert torch.allclose(onednn.linear(fc, x, relu=True), F.relu(fc(x)), atol=1e-5)
        with torch.autocast("cpu", torch.bfloat16):
            y = onednn.linear(fc, x, relu=False)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), fc(x).detach(), atol=0.05)


def test_native_kernels_build():
    # CI has a C compiler: the fast paths must really be exercised, not silently skipped
    assert load_kernel("lrn") is not None and load_kernel("winograd") is not None
