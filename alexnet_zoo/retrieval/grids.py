"""Pictures of search results: each query followed by its neighbours, captioned with scores (the
paper's Figure 4), drawn with Pillow so a result can be checked by eye."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from alexnet_zoo.data.images import load_image
from alexnet_zoo.errors import UnreadableImage

__all__ = ["draw_grid"]

Cell = tuple[str | os.PathLike | Image.Image, str]  # (image or path, caption)


def _regular_file(path: str | os.PathLike) -> bool:
    """Only regular files are opened: an index's paths come from a folder anyone may have made, and
    a FIFO or /dev/stdin there would block the drawing forever."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a name with a NUL byte
        return False


def _thumb(item: str | os.PathLike | Image.Image, size: int) -> Image.Image:
    broken = Image.new("RGB", (size, size), (200, 0, 0))  # a red square: the file is gone or broken
    if not isinstance(item, Image.Image) and not _regular_file(item):
        return broken
    try:
        img = item if isinstance(item, Image.Image) else load_image(item)
    except UnreadableImage:
        return broken
    img = img.convert("RGB").copy()
    img.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def draw_grid(rows: Sequence[Sequence[Cell]], out: str | os.PathLike | None = None, *, size: int = 128,
              pad: int = 6) -> Image.Image:
    """One row per query: cells of (image or path, caption). Saved to ``out`` when given. A cell
    that is no readable picture is drawn as a red square."""
    if not rows:
        raise ValueError("nothing to draw: no rows")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096 \
            or isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= 1024:
        raise ValueError(f"size must be 1..4096 and pad 0..1024 pixels, got size={size!r}, pad={pad!r}")
    font = ImageFont.load_default()
    caption = 14
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (pad + cols * (size + pad), pad + len(rows) * (size + caption + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        y = pad + r * (size + caption + pad)
        for c, (item, text) in enumerate(row):
            x = pad + c * (size + pad)
            grid.paste(_thumb(item, size), (x, y))
            if c == 0:
                draw.rectangle([x - 2, y - 2, x + size + 1, y + size + 1], outline=(0, 90, 200), width=2)
            draw.text((x + 2, y + size + 1), " ".join(text.split())[: size // 6], fill=(0, 0, 0), font=font)
    if out is not None:
        out = Path(out)
        # optimize: a smaller PNG for the same pixels (grids of photos end up in docs and reports)
        grid.save(out, optimize=True) if out.suffix.lower() == ".png" else grid.save(out)
    return grid
