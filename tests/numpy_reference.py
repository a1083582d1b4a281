"""An independent AlexNet forward pass in NumPy (float64), written from the paper's equations.

No torch.nn here: convolution is a sum over windows, LRN is the paper's formula with an explicit
channel window, pooling takes maxima over Caffe's ceil-rounded windows. Tests compare the library
against it, so a shared misunderstanding would have to be made twice, in two different ways.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """out[n, o, y, x] = b[o] + sum_{c in o's group, i, j} w[o, c, i, j] * xpad[n, c, y*s + i, x*s + j]"""
    n, cin, _, _ = x.shape
    cout, cin_g, k, _ = w.shape
    assert cin_g * groups == cin
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # n c y x i j
    outs = []
    per = cout // groups
    for g in range(groups):
        xs = windows[:, g * cin_g:(g + 1) * cin_g]
        ws = w[g * per:(g + 1) * per]
        outs.append(np.tensordot(xs, ws, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2))
    return np.concatenate(outs, axis=1) + b[None, :, None, None]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def lrn(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta, alpha as given."""
    channels = a.shape[1]
    out = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * np.sum(a[:, lo:hi + 1] ** 2, axis=1)) ** beta
    return out


def maxpool_ceil(x: np.ndarray, size: int = 3, stride: int = 2) -> np.ndarray:
    """Caffe's pooling: ceil((H - size) / stride) + 1 windows, the last one clipped to the input."""
    h, w = x.shape[2:]
    oh, ow = (math.ceil((d - size) / stride) + 1 for d in (h, w))
    out = np.empty(x.shape[:2] + (oh, ow))
    for y in range(oh):
        for z in range(ow):
            out[:, :, y, z] = x[:, :, y * stride:min(y * stride + size, h), z * stride:min(z * stride + size, w)].max(axis=(2, 3))
    return out


def alexnet_forward(params: dict[str, np.ndarray], x: np.ndarray, lrn_k: float = 2.0,
                    lrn_alpha: float = 1e-4) -> dict[str, np.ndarray]:
    """The paper's network (section 3.5) at test time (dropout is an identity with inverted
    scaling). Returns conv5 (after ReLU), pool5, fc6, fc7 (after ReLU) and fc8."""
    p = {name: v.astype(np.float64) for name, v in params.items()}
    a = relu(conv2d(x, p["conv1.weight"], p["conv1.bias"], 4, 0, 1))
    a = maxpool_ceil(lrn(a, 5, lrn_alpha, 0.75, lrn_k))
    a = relu(conv2d(a, p["conv2.weight"], p["conv2.bias"], 1, 2, 2))
    a = maxpool_ceil(lrn(a, 5, lrn_alpha, 0.75, lrn_k))
    a = relu(conv2d(a, p["conv3.weight"], p["conv3.bias"], 1, 1, 1))
    a = relu(conv2d(a, p["conv4.weight"], p["conv4.bias"], 1, 1, 2))
    conv5 = relu(conv2d(a, p["conv5.weight"], p["conv5.bias"], 1, 1, 2))
    pool5 = maxpool_ceil(conv5)
    assert pool5.shape[2:] == (6, 6), pool5.shape
    fc6 = relu(pool5.reshape(len(x), -1) @ p["fc6.weight"].T + p["fc6.bias"])
    fc7 = relu(fc6 @ p["fc7.weight"].T + p["fc7.bias"])
    fc8 = fc7 @ p["fc8.weight"].T + p["fc8.bias"]
    return {"conv5": conv5, "pool5": pool5, "fc6": fc6, "fc7": fc7, "fc8": fc8}
