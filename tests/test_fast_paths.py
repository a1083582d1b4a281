"""The CPU fast paths (oneDNN prepacking, Winograd, fused native kernels) against plain torch."""

import pytest
import torch
import torch.nn.functional as F

from alexnet_zoo.ops import onednn, winograd
from alexnet_zoo.ops.kernels import load_kernel, native_enabled

# the plain path (ALEXNET_ZOO_NATIVE=0) is held to the NumPy oracle in test_model.py
pytestmark = pytest.mark.skipif(not native_enabled(), reason="ALEXNET_ZOO_NATIVE=0 switches the fast paths off")


def direct(conv, x, relu):
    """The convolution in float64 (the reference every Winograd tile size is held to)."""
    y = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(),
                 padding=conv.padding, groups=conv.groups)
    return y.relu() if relu else y


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("r", [3, 5])
def test_winograd_matrices_compute_the_correlation(m, r):
    at, g, bt = winograd.matrices(m, r)
    d, k = torch.randn(m + r - 1, dtype=torch.float64), torch.randn(r, dtype=torch.float64)
    expected = torch.stack([(d[i:i + r] * k).sum() for i in range(m)])
    assert torch.allclose(at @ ((g @ k) * (bt @ d)), expected, atol=1e-12)
    assert bt.abs().amax(dim=1).eq(1.0).all()  # rows scaled as the docstring says


@pytest.mark.parametrize(("r", "m"), [(3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (5, 2), (5, 3), (5, 4)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("size", [(13, 13), (12, 10), (7, 9), (27, 27)])
def test_winograd_equals_direct_convolution(r, m, groups, size):
    torch.manual_seed(r * 100 + m * 10 + groups)
    # 40 channels per group: two full 16-channel blocks and a partial one in the kernels
    conv = torch.nn.Conv2d(40 * groups, 24 * groups, r, padding=r // 2, groups=groups).eval()
    x = torch.randn(5, 40 * groups, *size).contiguous(memory_format=torch.channels_last)
    for relu in (True, False):
        with torch.inference_mode():
            assert winograd.applies(conv, x)
            y = winograd.conv2d(conv, x, relu, tile=m)
        ref = direct(conv, x, relu)
        assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
        assert ((y - ref).abs().max() / ref.abs().max()).item() < 2e-5, (relu, m)


def test_winograd_without_bias_on_contiguous_input_in_several_passes(monkeypatch):
    conv = torch.nn.Conv2d(48, 64, 5, padding=2, groups=2, bias=False).eval()
    x = torch.randn(6, 48, 11, 15)  # NCHW: converted on the way in
    monkeypatch.setattr(winograd, "_WORKSPACE_BYTES", winograd._image_bytes(conv, 11, 15, 4))  # one image a pass
    with torch.inference_mode():
        assert winograd.tile_size(conv, x) == 4
        y = winograd.conv2d(conv, x, relu=False)
    ref = direct(conv, x, relu=False)
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 2e-5
    with torch.no_grad():  # the scratch buffers made inside inference mode serve outside it too
        assert torch.allclose(winograd.conv2d(conv, x, relu=True), ref.relu().float(), atol=1e-4)


def test_winograd_leaves_maps_too_big_for_its_buffers_to_onednn(monkeypatch):
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).eval()
    x = torch.randn(4, 16, 40, 40)
    with torch.inference_mode():
        assert winograd.applies(conv, x)
        monkeypatch.setattr(winograd, "_WORKSPACE_BYTES", winograd._image_bytes(conv, 40, 40, 5) - 1)
        assert not winograd.applies(conv, x)


def test_winograd_scratch_buffers_are_per_thread():
    """Two threads convolving different inputs at once each get their own result."""
    from concurrent.futures import ThreadPoolExecutor

    conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    xs = [torch.randn(8, 32, 13, 13) for _ in range(2)]

    def run(x):
        with torch.inference_mode():
            return [winograd.conv2d(conv, x, relu=False) for _ in range(20)]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, xs))
    for x, ys in zip(xs, results, strict=True):
        ref = direct(conv, x, relu=False)
        assert all(((y - ref).abs().max() / ref.abs().max()).item() < 2e-5 for y in ys)


def test_winograd_refuses_tile_sizes_it_has_no_kernel_for():
    conv = torch.nn.Conv2d(16, 16, 5, padding=2).eval()
    with torch.inference_mode(), pytest.raises(ValueError, match="F\\(6x6, 5x5\\)"):
        winograd.conv2d(conv, torch.randn(4, 16, 13, 13), relu=False, tile=6)


def test_winograd_tile_choice():
    x = torch.randn(8, 32, 13, 13)
    with torch.inference_mode():
        assert winograd.tile_size(torch.nn.Conv2d(32, 32, 3, padding=1, groups=2), x) == 5  # conv3..conv5
        assert winograd.tile_size(torch.nn.Conv2d(32, 32, 5, padding=2, groups=2), x) == 4  # conv2
        assert winograd.tile_size(torch.nn.Conv2d(32, 32, 3, padding=1), x[:2]) == 3  # small batch
        assert winograd.tile_size(torch.nn.Conv2d(32, 32, 5, padding=2), x[:1]) == 4
        for conv in (torch.nn.Conv2d(32, 32, 7, padding=3), torch.nn.Conv2d(32, 32, 3, padding=1, stride=2),
                     torch.nn.Conv2d(32, 32, 3), torch.nn.Conv2d(32, 32, 3, padding=1, dilation=2),
                     torch.nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect"), torch.nn.Conv2d(32, 32, (3, 5))):
            assert not winograd.applies(conv, x), conv
        assert not winograd.applies(torch.nn.Conv2d(32, 32, 3, padding=1), x[:1, :, :6, :6])  # too small a map
        with torch.autocast("cpu", torch.bfloat16):
            assert not winograd.applies(torch.nn.Conv2d(32, 32, 3, padding=1), x)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    assert not winograd.applies(conv, x)  # autograd wants the plain path
    with torch.no_grad():
        assert winograd.applies(conv, x)


@pytest.mark.parametrize("batch", [1, 4])
def test_whole_network_on_winograd_matches_numpy_reference(monkeypatch, batch):
    """conv2..conv5 all take Winograd (F(4x4, 5x5); F(3x3, 3x3) at batch 1, F(5x5, 3x3) at 4)
    and the network still agrees with the float64 NumPy oracle."""
    from numpy_reference import alexnet_forward

    from alexnet_zoo import alexnet

    tiles = []
    real = winograd.conv2d
    monkeypatch.setattr(winograd, "conv2d", lambda conv, x, relu: tiles.append(winograd.tile_size(conv, x))
                        or real(conv, x, relu))
    model = alexnet().eval()
    x = torch.randn(batch, 3, 227, 227) * 60
    with torch.inference_mode():
        ours = model(x)
    assert tiles == ([4, 3, 3, 3] if batch == 1 else [4, 5, 5, 5])
    ref = alexnet_forward({k: v.numpy() for k, v in model.state_dict().items()}, x.double().numpy())["fc8"]
    assert (ours.double() - torch.from_numpy(ref)).abs().max().item() / abs(ref).max() <= 1e-4


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
