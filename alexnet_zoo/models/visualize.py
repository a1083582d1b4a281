"""Pictures of the network: the conv1 kernels as the paper's Figure 3."""

from __future__ import annotations

import numpy as np
from PIL import Image

from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.quantized import QuantizedAlexNet

__all__ = ["conv1_filter_grid"]


def conv1_filter_grid(model: AlexNet | QuantizedAlexNet, *, channel_order: str = "RGB", per_row: int = 16,
                      scale: int = 4, gap: int = 2) -> Image.Image:
    """conv1's kernels, each min-max scaled to 0-255, ``per_row`` to a row; with two towers, tower 1
    (the first half of the kernels, GPU 1 in the paper) above tower 2 with a wider gap between. An
    int8 model shows its dequantised kernels."""
    weight = model.dequantized_weight("conv1") if isinstance(model, QuantizedAlexNet) else model.conv1.weight
    w = weight.detach().float().cpu().numpy()  # (96, 3, 11, 11)
    if w.shape[1] != 3:
        raise ValueError(f"conv1 has {w.shape[1]} input channels; only RGB kernels can be drawn")
    if channel_order == "BGR":
        w = w[:, ::-1]  # BVLC's Caffe weights see BGR pictures
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    kernels = ((w - lo) / np.maximum(hi - lo, 1e-12) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    towers = np.split(kernels, 2) if model.config.groups[1] == 2 else [kernels]
    k = kernels.shape[1] * scale
    rows_per_tower = [-(-len(t) // per_row) for t in towers]
    height = sum(rows_per_tower) * (k + gap) + (len(towers) - 1) * 4 * gap + gap
    width = per_row * (k + gap) + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y0 = gap
    for tower, rows in zip(towers, rows_per_tower):
        for i, kernel in enumerate(tower):
            r, c = divmod(i, per_row)
            big = kernel.repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = y0 + r * (k + gap), gap + c * (k + gap)
            canvas[y:y + k, x:x + k] = big
        y0 += rows * (k + gap) + 4 * gap
    return Image.fromarray(canvas, "RGB")
