"""Where alexnet_zoo keeps what it builds or downloads, so every module agrees on one place."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """The cache root (``$ALEXNET_ZOO_CACHE``, else ``$XDG_CACHE_HOME/alexnet_zoo``, else
    ``~/.cache/alexnet_zoo``) joined with ``parts``; the folder is created."""
    root = os.environ.get("ALEXNET_ZOO_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "alexnet_zoo")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
