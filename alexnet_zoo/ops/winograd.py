"""Winograd F(m x m, r x r) convolution for fp32 CPU inference (Lavin and Gray, CVPR 2016).

Winograd's minimal filtering turns a stride-1 convolution into (m + r - 1)^2 independent matrix
products per group with far fewer multiplies than the direct form: F(4x4, 5x5) (conv2) does 64
instead of 400 per 4x4 output tile, F(5x5, 3x3) (conv3..conv5) 49 instead of 225. The products of
every group run as one ``torch.bmm`` and the tile transforms as native kernels
(``kernels/winograd.c``). The transform matrices are built here by Toom-Cook interpolation from
small exact points, in float64; results differ from direct convolution by rounding only (up to
about 2e-5 relative for F(5x5, 3x3), the least exact tile used). Measured per layer against oneDNN's
direct convolution by ``benchmarks/conv_layers.py``; :func:`tile_size` holds the choice.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import torch
from torch import Tensor, nn

from alexnet_zoo.ops import onednn
from alexnet_zoo.ops.kernels import load_kernel
from alexnet_zoo.ops.prepared import prepared

__all__ = ["applies", "conv2d", "matrices", "tile_size", "transform_weight"]

_MIN_PIXELS = 13 * 13  # measured to win from one 13x13 map up (2 cores, AVX-512 and AVX2); smaller maps waste tiles
_SMALL_BATCH = 4 * 13 * 13  # below this many output pixels a 3x3 layer runs F(3x3) (fewer, fuller tiles) not F(5x5)
_WORKSPACE_BYTES = 64 << 20  # transformed tiles + products per pass: larger batches run in several passes
# interpolation points per tile side m + r - 1 (plus the point at infinity): small, exact in
# binary, the well-conditioned choices of Lavin and Gray / Barabasz et al.
_POINTS = {3: (0.0, 1.0, -1.0), 4: (0.0, 1.0, -1.0, 0.5), 5: (0.0, 1.0, -1.0, 0.5, -0.5),
           6: (0.0, 1.0, -1.0, 0.5, -0.5, 2.0), 7: (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0)}
_TILES = {3: (2, 3, 4, 5, 6), 5: (2, 3, 4)}  # output tile sides the kernels build, per kernel size (a <= 8)
_workspace = threading.local()  # per thread: concurrent forward passes never share a buffer


@functools.cache
def matrices(m: int, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(A^T, G, B^T)`` of F(m, r) in float64: ``y = A^T [(G g) * (B^T d)]`` is the correlation of
    ``d`` (m + r - 1 values) with ``g`` (r values), by Toom-Cook: B^T is the inverse transpose of the
    Vandermonde matrix at the points, G and A^T evaluate the kernel and read out the outputs. Rows
    of B^T are scaled to a largest entry of 1 (G's rows by the inverse), which keeps the input
    transform's rounding at the data's scale."""
    a = m + r - 1
    points = torch.tensor(_POINTS[a - 1], dtype=torch.float64)

    def evaluation(k: int) -> Tensor:  # (a, k): polynomials of degree < k at the points and infinity
        e = torch.zeros(a, k, dtype=torch.float64)
        e[:-1] = points[:, None] ** torch.arange(k, dtype=torch.float64)
        e[-1, -1] = 1.0
        return e

    bt = torch.linalg.inv(evaluation(a)).T
    scale = bt.abs().amax(dim=1, keepdim=True)
    return evaluation(m).T.contiguous(), (evaluation(r) * scale).contiguous(), (bt / scale).contiguous()


def tile_size(conv: nn.Conv2d, x: Tensor) -> int | None:
    """The output tile side m to run ``conv`` on ``x`` with, the fastest measured on conv2..conv5:
    F(4x4, 5x5) for 5x5 layers; F(5x5, 3x3) for 3x3 layers (on 13x13 maps 3x3 tiles of 7x7, 23% fewer
    product rows than F(4x4)), F(3x3, 3x3) below 4 images. None where Winograd does not apply (not a
    stride-1 "same" 3x3 or 5x5 fp32 CPU convolution, too small a map, autograd) or where one image's
    work buffers would pass _WORKSPACE_BYTES (a huge map: memory stays bounded, oneDNN runs it)."""
    r = conv.kernel_size[0]
    if conv.kernel_size != (r, r) or r not in (3, 5) or conv.padding != (r // 2, r // 2):
        return None
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return None
    if onednn.compute_dtype(x) != torch.float32 or x.dim() != 4 or x.shape[1] != conv.in_channels:
        return None
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    if pixels < _MIN_PIXELS or not onednn.applies(x, conv) or load_kernel("winograd") is None:
        return None
    m = 4 if r == 5 else 3 if pixels < _SMALL_BATCH else 5
    return m if _image_bytes(conv, x.shape[2], x.shape[3], m) <= _WORKSPACE_BYTES else None


def _image_bytes(conv: nn.Conv2d, h: int, w: int, m: int) -> int:
    """Bytes of transformed tiles and products one h x w image needs at tile side m."""
    a = m + conv.kernel_size[0] - 1
    return a * a * -(-h // m) * -(-w // m) * (conv.in_channels + conv.out_channels) * 4


def applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """True where :func:`conv2d` may replace the oneDNN path for this call."""
    return tile_size(conv, x) is not None


def transform_weight(weight: Tensor, m: int, groups: int) -> Tensor:
    """(C_out, C_in / groups, r, r) -> (a * a * groups, C_in / groups, C_out / groups): the
    Winograd-domain matrices in the order the kernels number them (matrix xi of group g at
    xi * groups + g), transformed in float64."""
    cout, cin_g, r = weight.shape[0], weight.shape[1], weight.shape[2]
    a = m + r - 1
    g_mat = matrices(m, r)[1]
    u = (g_mat @ weight.double() @ g_mat.T).to(weight.dtype)  # (C_out, C_in/G, a, a)
    u = u.reshape(groups, cout // groups, cin_g, a * a)
    return u.permute(3, 0, 2, 1).reshape(a * a * groups, cin_g, cout // groups).contiguous()


def conv2d(conv: nn.Conv2d, x: Tensor, relu: bool, tile: int | None = None) -> Tensor:
    """``relu(conv(x))`` (or ``conv(x)``) by Winograd, channels-last; the caller checked :func:`applies`.
    ``tile`` forces an output tile side (2..6 for 3x3, 2..4 for 5x5: tests and benchmarks compare
    them); by default :func:`tile_size` chooses. Batches whose work buffers would pass
    _WORKSPACE_BYTES run a few images at a time (at least one: a forced tile may exceed it)."""
    chosen = tile_size(conv, x)
    if chosen is None:
        raise ValueError("winograd.conv2d called where winograd.applies is False")
    m = chosen if tile is None else tile
    if m not in _TILES[conv.kernel_size[0]]:
        raise ValueError(f"no Winograd F({m}x{m}, {conv.kernel_size[0]}x{conv.kernel_size[0]}): "
                         f"tile sides {_TILES[conv.kernel_size[0]]} are built")
    x = x.contiguous(memory_format=torch.channels_last)
    n, _, h, w = x.shape
    u, bias = prepared(conv, f"winograd{m}", torch.float32, None, lambda wt: transform_weight(wt, m, conv.groups))
    y = torch.empty((n, conv.out_channels, h, w), memory_format=torch.channels_last)
    step = max(1, _WORKSPACE_BYTES // _image_bytes(conv, h, w, m))
    for start in range(0, n, step):
        _run(conv, x[start:start + step], y[start:start + step], m, u, bias, relu)
    return y


def _run(conv: nn.Conv2d, x: Tensor, y: Tensor, m: int, u: Tensor, bias: Tensor | None, relu: bool) -> None:
    """One pass of :func:`conv2d` over the images of ``x`` (channels-last, contiguous) into ``y``."""
    lib = load_kernel("winograd")
    n, c, h, w = x.shape
    r, groups, cout = conv.kernel_size[0], conv.groups, conv.out_channels
    a = m + r - 1
    tiles = n * -(-h // m) * -(-w // m)
    at, _, bt = (t.float() for t in matrices(m, r))
    v = _buffer("tiles", (tiles, a * a * groups, c // groups))  # tile-major (see winograd.c)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    _check(lib.wino_input_f32(ptr(x.data_ptr()), ptr(v.data_ptr()), i64(n), i64(h), i64(w), i64(c), i64(groups),
                              i64(m), i64(a), i64(r // 2), ptr(bt.data_ptr())), "input", m, r)
    prod = torch.bmm(v.transpose(0, 1), u, out=_buffer("products", (a * a * groups, tiles, cout // groups)))
    bias_ptr = ptr(bias.data_ptr()) if bias is not None else None
    _check(lib.wino_output_f32(ptr(prod.data_ptr()), bias_ptr, ptr(y.data_ptr()), i64(n), i64(h), i64(w), i64(cout),
                               i64(groups), i64(m), i64(a), ptr(at.data_ptr()), ctypes.c_int(int(relu))), "output", m, r)


def _check(code: int, which: str, m: int, r: int) -> None:
    """Raise for a kernel's nonzero return code (1: out of memory, 2: a tile size it was not built for)."""
    if code == 1:
        raise MemoryError(f"the Winograd {which} transform could not allocate its work buffer")
    if code:
        raise ValueError(f"the Winograd {which} kernel has no F({m}x{m}, {r}x{r}) (code {code})")


def _buffer(slot: str, shape: tuple[int, ...]) -> Tensor:
    """A reused float32 scratch tensor of ``shape``: the transformed tiles and their products are tens
    of MB, which glibc would map afresh (and page-fault in) on every call. Grows up to one pass's
    size (_WORKSPACE_BYTES, or one image's where that is more), never shrinks."""
    numel = 1
    for d in shape:
        numel *= d
    buf = getattr(_workspace, slot, None)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
            buf = torch.empty(numel)
        setattr(_workspace, slot, buf)
    return buf[:numel].view(shape)
