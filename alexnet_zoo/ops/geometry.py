"""Layer geometry and conventions that the config (plain data) and the ops (LRN, pooling) share.

Torch-free and ctypes-free, so that ``config.py`` can name an LRN convention and compute map sizes
without importing the modules that load native kernels, and the ops need not import the config.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["LRNConvention", "pool_output_size"]

LRNConvention = Literal["paper", "caffe"]  # alpha on the raw sum (the paper) or on the mean (Caffe); lrn.py


def pool_output_size(n: int, ceil: bool) -> int:
    """Output length of a 3-wide, stride-2 pool over ``n`` (Caffe's ceil rounding or torch's
    floor); 0 when n < 3."""
    if n < 3:
        return 0
    if not ceil:
        return (n - 3) // 2 + 1
    out = -(-(n - 3) // 2) + 1
    return out - 1 if (out - 1) * 2 >= n else out  # the last window must start inside the input
