"""The Triton LRN kernels (alexnet_zoo/ops/lrn_triton.py) against the formula: on CPU tensors through
Triton's interpreter (TRITON_INTERPRET=1, read by lrn_triton at each call), and compiled on a CUDA GPU
where one is present (``-m cuda``; benchmarks/gpu_check.py runs those). Tensors stay small: the
interpreter runs each program in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy_reference import lrn as reference_lrn

from alexnet_zoo.ops.geometry import pool_output_size
from alexnet_zoo.ops.lrn import local_response_norm
from alexnet_zoo.ops.lrn_triton import triton_available, triton_lrn, triton_lrn_pool

pytestmark = pytest.mark.skipif(not triton_available(), reason="Triton is not installed (torch's CPU wheels lack it)")

TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float64: 1e-12}
PARAMS = {"paper": (2.0, 1e-4), "caffe": (1.0, 1e-4)}  # k, alpha as each convention writes them


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter for the kernels lrn_triton launches on CPU tensors. Triton itself is imported
    first: its own @triton.jit helpers (tl.zeros, ...) take the interpreter or the compiler once, at its
    import, and must stay compiled for whatever else this process runs on a GPU. The kernels use none."""
    import triton  # noqa: F401

    monkeypatch.setenv("TRITON_INTERPRET", "1")


def formula(x: torch.Tensor, size: int, convention: str, relu: bool = False, beta: float = 0.75) -> np.ndarray:
    k, alpha = PARAMS[convention]
    a = x.double().numpy()
    return reference_lrn(np.maximum(a, 0.0) if relu else a, size, alpha / size if convention == "caffe" else alpha,
                         beta, k)


def rel_err(y: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(y.double().cpu().numpy() - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("convention", ["paper", "caffe"])
@pytest.mark.parametrize("size", [1, 5])
@pytest.mark.parametrize("channels", [1, 7, 37])  # 37: across two channel tiles of 32
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_matches_the_formula(interpret, convention, size, channels, channels_last):
    x = torch.randn(2, channels, 9, 8) * 300  # conv1-sized activations: squares beyond fp16's range
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    k, alpha = PARAMS[convention]
    y = triton_lrn(x, size, alpha, 0.75, k, convention)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert rel_err(y, formula(x, size, convention)) <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_forward_dtypes_and_relu(interpret, dtype, relu):
    x = (torch.randn(2, 11, 6, 5) * 300).to(dtype)
    y = triton_lrn(x, 5, 1e-4, 0.75, 2.0, "paper", relu=relu)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert rel_err(y, formula(x, 5, "paper", relu)) <= TOL[dtype]


def test_strided_input_is_made_dense(interpret):
    x = (torch.randn(2, 9, 8, 10) * 50)[:, :, :, ::2]  # neither contiguous nor channels-last
    assert rel_err(triton_lrn(x, 5, 1e-4, 0.75, 2.0), formula(x, 5, "paper")) <= TOL[torch.float32]


@pytest.mark.parametrize("size,convention,relu", [(5, "paper", True), (5, "caffe", False), (1, "paper", False)])
def test_gradient_passes_gradcheck_in_float64(interpret, size, convention, relu):
    x = (torch.randn(1, 7, 2, 3, dtype=torch.float64) * 30).requires_grad_()  # 7 channels: both ends and a middle
    k, alpha = PARAMS[convention]
    assert torch.autograd.gradcheck(lambda t: triton_lrn(t, size, alpha * 10, 0.75, k, convention, relu=relu), (x,))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("convention", ["paper", "caffe"])
def test_fp32_gradient_equals_the_torch_expression(interpret, channels_last, convention):
    x = torch.randn(2, 37, 5, 4) * 100
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 37, 5, 4)  # NCHW whatever x is: the backward must follow x's layout itself
    k, alpha = PARAMS[convention]
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    triton_lrn(ours, 5, alpha, 0.75, k, convention, relu=True).backward(grad)
    local_response_norm(theirs.relu(), 5, alpha, 0.75, k, convention).backward(grad)
    assert ours.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)


def pooled(x: torch.Tensor, ceil_mode: bool, convention: str = "paper", relu: bool = False) -> np.ndarray:
    return F.max_pool2d(torch.from_numpy(formula(x, 5, convention, relu)), 3, 2, ceil_mode=ceil_mode).numpy()


@pytest.mark.parametrize("ceil_mode", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("convention", ["paper", "caffe"])
def test_fused_pool_matches_the_formula(interpret, ceil_mode, channels_last, convention):
    x = torch.randn(1, 37, 9, 8) * 300  # 9 and 8: a cut last window in ceil mode, none in floor mode
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    k, alpha = PARAMS[convention]
    y = triton_lrn_pool(x, ceil_mode, 5, alpha, 0.75, k, convention, relu=True)
    ref = pooled(x, ceil_mode, convention, relu=True)
    assert y.shape == ref.shape == (1, 37, pool_output_size(9, ceil_mode), pool_output_size(8, ceil_mode))
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert rel_err(y, ref) <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_pool_in_half_precision(interpret, dtype):
    x = (torch.randn(2, 11, 7, 7) * 300).to(dtype)
    y = triton_lrn_pool(x, True)
    assert y.dtype == dtype and rel_err(y, pooled(x, True)) <= TOL[dtype]


@pytest.mark.parametrize("ceil_mode", [True, False])
def test_fused_pool_gradient_passes_gradcheck_in_float64(interpret, ceil_mode):
    x = (torch.randn(1, 6, 7, 6, dtype=torch.float64) * 30).requires_grad_()
    # fast mode: the Jacobian along random directions (a full one takes minutes in the interpreter)
    assert torch.autograd.gradcheck(lambda t: triton_lrn_pool(t, ceil_mode, 5, 1e-3, 0.75, 2.0, relu=True), (x,),
                                    fast_mode=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_pool_fp32_gradient_equals_the_composition(interpret, channels_last):
    x = torch.randn(2, 37, 9, 8) * 100
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = triton_lrn_pool(ours, True, relu=True)
    grad = torch.randn(y.shape)  # NCHW whatever x is
    y.backward(grad)
    F.max_pool2d(local_response_norm(theirs.relu()), 3, 2, ceil_mode=True).backward(grad)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)


def test_bad_input_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="CUDA tensors"):
        triton_lrn(x)  # a CPU tensor without the interpreter: the C kernel is the CPU's path
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="odd"):
        triton_lrn(x, size=4)
    with pytest.raises(ValueError, match="convention"):
        triton_lrn(x, convention="torch")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        triton_lrn(x[0])
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        triton_lrn(x.to(torch.int32))
    with pytest.raises(ValueError, match="at least 3x3"):
        triton_lrn_pool(x[:, :, :2], True)
    with pytest.raises(ValueError, match="CUDA tensors"):
        monkeypatch.delenv("TRITON_INTERPRET")
        triton_lrn_pool(x, True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_on_cuda_equals_the_torch_expression(monkeypatch, dtype, channels_last):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = (torch.randn(4, 96, 27, 27, device="cuda") * 300).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = triton_lrn(ours, relu=True)
    y.backward(grad)
    ref = local_response_norm(theirs, relu=True)
    ref.backward(grad)
    assert rel_err(y, formula(x.float().cpu(), 5, "paper", relu=True)) <= TOL[dtype]
    scale = theirs.grad.float().abs().max()
    assert ((ours.grad.float() - theirs.grad.float()).abs().max() / scale).item() <= 10 * TOL[dtype]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_pool_compiled_on_cuda_equals_the_composition(monkeypatch, dtype, channels_last):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = (torch.randn(4, 96, 27, 27, device="cuda") * 300).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = triton_lrn_pool(ours, True, relu=True)
    grad = torch.randn_like(y)
    y.backward(grad)
    ref = F.max_pool2d(local_response_norm(theirs, relu=True), 3, 2, ceil_mode=True)
    ref.backward(grad)
    assert rel_err(y, pooled(x.float().cpu(), True, relu=True)) <= TOL[dtype]
    if dtype == torch.float32:  # in bf16 a rounded tie can move a window's maximum: compare fp32 only
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5)
