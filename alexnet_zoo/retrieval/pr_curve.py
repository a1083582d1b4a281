"""A PNG of a near-duplicate precision-recall curve, drawn with Pillow (as the training curves of
:mod:`alexnet_zoo.train.plot` are) so calibration needs no plotting library: recall across,
precision up, one point per distinct threshold, the thresholds written beside some points and the
target precision drawn as a line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from alexnet_zoo.paths import atomic_write

__all__ = ["draw_pr_curve"]

_W, _H, _LEFT, _TOP, _RIGHT, _BOTTOM = 520, 400, 56, 28, 500, 352
_BLUE, _RED, _GREY = (31, 119, 180), (214, 39, 40), (170, 170, 170)


def _px(recall: float, precision: float) -> tuple[float, float]:
    return _LEFT + recall * (_RIGHT - _LEFT), _BOTTOM - precision * (_BOTTOM - _TOP)


def draw_pr_curve(points: Sequence[tuple[float, float, float]], out: str | os.PathLike, *, title: str = "",
                  target: float | None = None) -> Path:
    """Draw ``points`` (threshold, recall, precision), best threshold first, to the PNG ``out``
    (written atomically); ``target``: a precision drawn as a dashed line."""
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_LEFT + 60, 4), title[:70] or "near-duplicate pairs: precision vs recall", fill="black")
    draw.rectangle((_LEFT, _TOP, _RIGHT, _BOTTOM), outline="black")
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x, y = _px(tick, tick)
        draw.line((_LEFT - 4, y, _LEFT, y), fill="black")
        draw.text((8, y - 6), f"{tick:.1f}", fill="black")
        draw.line((x, _BOTTOM, x, _BOTTOM + 4), fill="black")
        draw.text((x - 8, _BOTTOM + 6), f"{tick:.1f}", fill="black")
    draw.text(((_LEFT + _RIGHT) // 2 - 20, _H - 16), "recall", fill="black")
    draw.text((4, _TOP - 12), "precision", fill="black")
    if target is not None:
        _, y = _px(0, target)
        for x in range(_LEFT, _RIGHT, 8):
            draw.line((x, y, min(x + 4, _RIGHT), y), fill=_RED)
        draw.text((_LEFT + 6, y + 2), f"target {target:g}", fill=_RED)
    if not points:
        draw.text((_LEFT + 10, _TOP + 10), "no pairs found (or no true pairs labelled)", fill=_GREY)
    pixels = [_px(r, p) for _, r, p in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=_BLUE, width=2)
    step = max(1, len(points) // 8)  # about eight thresholds written along the curve
    for n, ((threshold, _, _), (x, y)) in enumerate(zip(points, pixels)):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=_BLUE)
        if n % step == 0 or n == len(points) - 1:
            draw.text((x + 4 if x < _RIGHT - 56 else x - 48, y + 2), f"{threshold:.4f}", fill="black")
    out = Path(out)
    atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
    return out
