"""A PNG of a run's curves (training loss by step; validation top-1 / top-5 by epoch), drawn with
Pillow so the recipe needs no plotting library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from alexnet_zoo.paths import atomic_write

__all__ = ["plot_metrics"]

_W, _H, _MARGIN = 480, 320, 48
_COLOURS = {"train loss": (31, 119, 180), "val loss": (255, 127, 14), "train top-1": (148, 103, 189),
            "val top-1": (44, 160, 44), "val top-5": (214, 39, 40)}


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _panel(title: str, xlabel: str, series: dict[str, Sequence[tuple[float, float]]],
           y_range: tuple[float, float] | None = None) -> Image.Image:
    image = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = _MARGIN + 8, 24, _W - 12, _H - _MARGIN + 8
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    draw.text((left, 4), title, fill="black")
    draw.rectangle((left, top, right, bottom), outline="black")
    if not points:
        draw.text((left + 10, top + 10), "no data yet", fill="gray")
        return image
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in _ticks(y0, y1):
        _, py = to_px(x0, t)
        draw.line((left - 4, py, left, py), fill="black")
        draw.text((4, py - 6), f"{t:.4g}", fill="black")
    for t in _ticks(x0, x1):
        px, _ = to_px(t, y0)
        draw.line((px, bottom, px, bottom + 4), fill="black")
        draw.text((px - 8, bottom + 6), f"{t:.4g}", fill="black")
    draw.text(((left + right) // 2 - 16, _H - 14), xlabel, fill="black")
    for row, (name, pts) in enumerate(series.items()):
        colour = _COLOURS.get(name, (0, 0, 0))
        pixels = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels if len(pixels) < 40 else []:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        draw.text((right - 90, top + 6 + 12 * row), name, fill=colour)
    return image


def plot_metrics(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Draw ``rows`` (from ``metrics.jsonl``) into ``path``: loss on the left, accuracy on the right."""
    train = [r for r in rows if r.get("event", "train") == "train"]
    val = [r for r in rows if r.get("event") == "val"]
    loss = {"train loss": [(r["step"], r["loss"]) for r in train],
            "val loss": [(r["step"], r["loss"]) for r in val]}
    accuracy = {"val top-1": [(r["epoch"] + 1, r["top1"]) for r in val],
                "val top-5": [(r["epoch"] + 1, r["top5"]) for r in val]}
    if not val:  # no validation set: the training batches' accuracy, by step
        accuracy = {"train top-1": [(r["step"], r["top1"]) for r in train if r.get("top1") is not None]}
    figure = Image.new("RGB", (2 * _W, _H), "white")
    figure.paste(_panel("loss", "step", loss), (0, 0))
    figure.paste(_panel("accuracy (%)", "epoch" if val else "step", accuracy, (0.0, 100.0)), (_W, 0))
    path = Path(path)
    atomic_write(path, lambda tmp: figure.save(tmp, format="PNG"))
    return path
