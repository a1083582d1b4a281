"""The Triton source of ``lrn_triton``'s kernels (LRN, and LRN fused with the 3x3 stride-2 max pool), kept apart because importing it needs Triton
(``lrn_triton`` imports this module only when a kernel is first launched) and because the functions
are left undecorated: ``lrn_triton`` applies ``triton.jit`` itself, compiled or interpreted.

Each program takes a BLOCK_C x BLOCK_P tile (channels x spatial positions) of one image and reads
the SIZE channel-shifted tiles around it (masked at both channel ends: zero beyond them, as in the
formula); the shifted reads hit the cache, as in kernels/lrn.c's running window. Offsets are int64.
Only Triton's builtins are used (``tl.full``, not ``tl.zeros``, which is itself a @triton.jit function
bound to the interpreter or the compiler when Triton is imported), so that either way of running
these kernels works whatever Triton was imported under.
"""

from __future__ import annotations

import triton.language as tl

__all__ = ["lrn_backward_combine", "lrn_backward_terms", "lrn_forward", "lrn_pool_forward", "lrn_pool_scatter"]


def lrn_forward(x_ptr, y_ptr, C, P, stride_n, stride_c, stride_p, alpha, beta, k, SIZE: tl.constexpr,
                RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """y = a * D^-beta."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    base = tl.program_id(2).to(tl.int64) * stride_n + p.to(tl.int64) * stride_p
    inside = (c < C) & (p < P)
    squares = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for j in tl.static_range(SIZE):
        cj = c + (j - SIZE // 2)
        v = tl.load(x_ptr + base + cj.to(tl.int64) * stride_c, mask=inside & (cj >= 0) & (cj < C), other=0.0)
        v = v.to(ACC)
        if RELU:
            v = tl.maximum(v, 0.0)
        squares += v * v
    here = base + c.to(tl.int64) * stride_c
    a = tl.load(x_ptr + here, mask=inside, other=0.0).to(ACC)
    if RELU:
        a = tl.maximum(a, 0.0)
    y = a * tl.exp(-beta * tl.log(k + alpha * squares))
    tl.store(y_ptr + here, y.to(y_ptr.dtype.element_ty), mask=inside)


def lrn_backward_terms(x_ptr, g_ptr, direct_ptr, spread_ptr, C, P, stride_n, stride_c, stride_p, alpha, beta, k,
                       SIZE: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_P: tl.constexpr):
    """direct = g D^-beta and spread = g b / D, per channel (D recomputed from x)."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    base = tl.program_id(2).to(tl.int64) * stride_n + p.to(tl.int64) * stride_p
    inside = (c < C) & (p < P)
    squares = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for j in tl.static_range(SIZE):
        cj = c + (j - SIZE // 2)
        v = tl.load(x_ptr + base + cj.to(tl.int64) * stride_c, mask=inside & (cj >= 0) & (cj < C), other=0.0)
        v = v.to(ACC)
        if RELU:
            v = tl.maximum(v, 0.0)
        squares += v * v
    here = base + c.to(tl.int64) * stride_c
    a = tl.load(x_ptr + here, mask=inside, other=0.0).to(ACC)
    if RELU:
        a = tl.maximum(a, 0.0)
    g = tl.load(g_ptr + here, mask=inside, other=0.0).to(ACC)
    d = k + alpha * squares
    scale = tl.exp(-beta * tl.log(d))
    tl.store(direct_ptr + here, g * scale, mask=inside)
    tl.store(spread_ptr + here, g * a * scale / d, mask=inside)


def lrn_backward_combine(x_ptr, direct_ptr, spread_ptr, dx_ptr, C, P, stride_n, stride_c, stride_p, alpha, beta, k,
                         SIZE: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_P: tl.constexpr):
    """dx = direct - 2 alpha beta a * (window sum of spread), times ReLU's mask."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    base = tl.program_id(2).to(tl.int64) * stride_n + p.to(tl.int64) * stride_p
    inside = (c < C) & (p < P)
    total = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
    for j in tl.static_range(SIZE):
        cj = c + (j - SIZE // 2)
        total += tl.load(spread_ptr + base + cj.to(tl.int64) * stride_c, mask=inside & (cj >= 0) & (cj < C),
                         other=0.0)
    here = base + c.to(tl.int64) * stride_c
    x = tl.load(x_ptr + here, mask=inside, other=0.0).to(ACC)
    a = x
    if RELU:
        a = tl.maximum(x, 0.0)
    dx = tl.load(direct_ptr + here, mask=inside, other=0.0) - 2.0 * alpha * beta * a * total
    if RELU:
        dx = tl.where(x > 0.0, dx, 0.0)
    tl.store(dx_ptr + here, dx.to(dx_ptr.dtype.element_ty), mask=inside)


def lrn_pool_forward(x_ptr, y_ptr, C, H, W, OH, OW, stride_n, stride_c, stride_p, out_n, out_c, out_p, alpha, beta,
                     k, SIZE: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_P: tl.constexpr):
    """y = the largest LRN value of each 3x3 stride-2 window (a window past the map's end is cut, as
    Caffe's ceil rounding needs); LRN is computed in place for each of the window's nine positions."""
    q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]  # output positions
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    n = tl.program_id(2).to(tl.int64)
    inside = (c < C) & (q < OH * OW)
    oh, ow = q // OW, q % OW
    best = tl.full((BLOCK_C, BLOCK_P), float("-inf"), ACC)
    for dy in tl.static_range(3):
        for dx in tl.static_range(3):
            h, w = 2 * oh + dy, 2 * ow + dx
            valid = inside & (h < H) & (w < W)
            base = n * stride_n + (h * W + w).to(tl.int64) * stride_p
            squares = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
            for j in tl.static_range(SIZE):
                cj = c + (j - SIZE // 2)
                v = tl.load(x_ptr + base + cj.to(tl.int64) * stride_c, mask=valid & (cj >= 0) & (cj < C), other=0.0)
                v = v.to(ACC)
                if RELU:
                    v = tl.maximum(v, 0.0)
                squares += v * v
            a = tl.load(x_ptr + base + c.to(tl.int64) * stride_c, mask=valid, other=0.0).to(ACC)
            if RELU:
                a = tl.maximum(a, 0.0)
            value = a * tl.exp(-beta * tl.log(k + alpha * squares))
            best = tl.maximum(best, tl.where(valid, value, float("-inf")))
    here = n * out_n + c.to(tl.int64) * out_c + q.to(tl.int64) * out_p
    tl.store(y_ptr + here, best.to(y_ptr.dtype.element_ty), mask=inside)


def lrn_pool_scatter(x_ptr, g_ptr, gx_ptr, C, H, W, OH, OW, stride_n, stride_c, stride_p, out_n, out_c, out_p, alpha,
                     beta, k, SIZE: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_P: tl.constexpr):
    """The pool's backward: each output's gradient added (atomically: windows overlap) at the position
    of its window's largest LRN value, the first one in row order on a tie, as torch's max_pool2d does."""
    q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    n = tl.program_id(2).to(tl.int64)
    inside = (c < C) & (q < OH * OW)
    oh, ow = q // OW, q % OW
    best = tl.full((BLOCK_C, BLOCK_P), float("-inf"), ACC)
    where = tl.full((BLOCK_C, BLOCK_P), 0, tl.int64)
    for dy in tl.static_range(3):
        for dx in tl.static_range(3):
            h, w = 2 * oh + dy, 2 * ow + dx
            valid = inside & (h < H) & (w < W)
            p = (h * W + w).to(tl.int64)
            base = n * stride_n + p * stride_p
            squares = tl.full((BLOCK_C, BLOCK_P), 0.0, ACC)
            for j in tl.static_range(SIZE):
                cj = c + (j - SIZE // 2)
                v = tl.load(x_ptr + base + cj.to(tl.int64) * stride_c, mask=valid & (cj >= 0) & (cj < C), other=0.0)
                v = v.to(ACC)
                if RELU:
                    v = tl.maximum(v, 0.0)
                squares += v * v
            a = tl.load(x_ptr + base + c.to(tl.int64) * stride_c, mask=valid, other=0.0).to(ACC)
            if RELU:
                a = tl.maximum(a, 0.0)
            value = a * tl.exp(-beta * tl.log(k + alpha * squares))
            better = valid & (value > best)
            best = tl.where(better, value, best)
            where = tl.where(better, p, where)
    g = tl.load(g_ptr + n * out_n + c.to(tl.int64) * out_c + q.to(tl.int64) * out_p, mask=inside, other=0.0)
    tl.atomic_add(gx_ptr + n * stride_n + c.to(tl.int64) * stride_c + where * stride_p, g.to(ACC), mask=inside)
