import pytest
import torch

from alexnet_zoo import LocalResponseNorm, local_response_norm


def naive_lrn(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula, one channel at a time, in float64; alpha multiplies the raw sum."""
    a = a.double()
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return out


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("convention", ["paper", "caffe"])
def test_lrn_matches_formula(path, dtype, channels_last, convention):
    # conv1-like activations of 0-255 images: squares exceed fp16's range, as they do in the real net
    x = (torch.randn(2, 96, 13, 11) * 300).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    size, alpha, beta, k = (5, 1e-4, 0.75, 2.0) if convention == "paper" else (5, 1e-4, 0.75, 1.0)
    y = local_response_norm(x, size, alpha, beta, k, convention)
    raw_alpha = alpha if convention == "paper" else alpha / size
    ref = naive_lrn(x.float(), size, raw_alpha, beta, k)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.isfinite(y).all()
    assert rel_err(y, ref) <= TOL[dtype]


@pytest.mark.parametrize("beta", [0.75, 0.5, 0.6])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_lrn_other_sizes_and_betas(path, beta, size):
    x = torch.randn(3, 10, 7, 7) * 40
    ref = naive_lrn(x, size, 1e-3, beta, 1.5)
    assert rel_err(local_response_norm(x, size, 1e-3, beta, 1.5), ref) <= 1e-6


def test_relu_fusion_and_inplace(path):
    x = torch.randn(2, 16, 9, 9) * 100
    ref = naive_lrn(x.relu(), 5, 1e-4, 0.75, 2.0)
    assert rel_err(local_response_norm(x, relu=True), ref) <= 1e-6
    with torch.inference_mode():
        xi = x.clone().contiguous(memory_format=torch.channels_last)
        y = local_response_norm(xi, relu=True, inplace=True)
    assert rel_err(y, ref) <= 1e-6


def test_caffe_convention_equals_torch_module():
    x = torch.randn(2, 32, 8, 8) * 50
    theirs = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)(x)
    ours = local_response_norm(x, 5, 1e-4, 0.75, 1.0, "caffe")
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_gradient_matches_float64(path):
    x = (torch.randn(2, 12, 5, 5) * 30).double().requires_grad_()
    torch.autograd.gradcheck(lambda t: local_response_norm(t, 5, 1e-3, 0.75, 2.0).double(), (x,))
    xf = (torch.randn(2, 12, 5, 5) * 30).requires_grad_()
    local_response_norm(xf).sum().backward()
    assert xf.grad is not None and torch.isfinite(xf.grad).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lrn_cuda(dtype):
    x = torch.randn(2, 96, 13, 13, device="cuda") * 300
    ref = naive_lrn(x.cpu(), 5, 1e-4, 0.75, 2.0)
    assert rel_err(local_response_norm(x.to(dtype)).cpu(), ref) <= TOL[dtype]


def test_module_and_errors():
    m = LocalResponseNorm(5, 1e-4, 0.75, 1.0, "caffe")
    assert "caffe" in repr(m)
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(m(x), local_response_norm(x, 5, 1e-4, 0.75, 1.0, "caffe"))
    with pytest.raises(ValueError, match="odd"):
        local_response_norm(x, size=4)
    with pytest.raises(ValueError, match="convention"):
        local_response_norm(x, convention="torch")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        local_response_norm(torch.randn(8, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("with_lrn", [True, False])
def test_fused_lrn_max_pool_equals_composition(path, dtype, ceil_mode, with_lrn):
    from alexnet_zoo.ops.geometry import pool_output_size
    from alexnet_zoo.ops.pooling import max_pool

    x = (torch.randn(3, 40, 14, 13) * 200).to(dtype).contiguous(memory_format=torch.channels_last)
    lrn = (5, 1e-4, 0.75, 2.0, "paper") if with_lrn else None
    with torch.inference_mode():
        y = max_pool(x, ceil_mode, lrn, relu=True)
    a = x.float().relu()
    ref = torch.nn.functional.max_pool2d(naive_lrn(a, 5, 1e-4, 0.75, 2.0).float() if with_lrn else a, 3, 2,
                                         ceil_mode=ceil_mode)
    assert y.shape == ref.shape == (3, 40, pool_output_size(14, ceil_mode), pool_output_size(13, ceil_mode))
    assert y.dtype == dtype
    assert rel_err(y, ref.double()) <= TOL[dtype]
