"""A per-layer cache of weights prepared for a fast kernel (prepacked, transformed, cast).

Preparing weights costs as much as a small batch's forward pass, so it is done once and kept
on the layer, keyed by the parameter object and its version counter: replacing the parameter
(``load_state_dict(assign=True)``, ``.to()``) or changing it in place (an optimizer step,
``load_state_dict``) both invalidate it, so a stale copy is never used.

A model built inside ``torch.inference_mode()`` has inference tensors as parameters, which keep no
version counter; for those the stamp is a fingerprint of the storage address and an evenly spaced
sample of the values (a few thousand reads), which changes when the weights are loaded or replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor, nn

__all__ = ["prepared"]


def prepared(layer: nn.Module, kind: str, dtype: torch.dtype, key: Hashable,
             prepare: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor | None]:
    """``(prepare(weight as dtype), bias as dtype)`` for ``layer``, cached per ``kind``."""
    w, b = layer.weight, layer.bias
    stamp = (_version(w), None if b is None else _version(b), dtype, key)
    attr = f"_alexnet_zoo_{kind}"
    cached = getattr(layer, attr, None)
    if cached is None or cached[0] is not w or cached[1] != stamp:
        with torch.no_grad():
            bias = None if b is None else b.detach().to(dtype)
            cached = (w, stamp, (prepare(w.detach().to(dtype)), bias))
        object.__setattr__(layer, attr, cached)  # not a submodule, buffer or parameter
    return cached[2]


_SAMPLE = 4096  # values read to fingerprint an inference tensor


def _version(t: Tensor) -> Hashable:
    """The tensor's version counter, or for inference tensors (no counter) a content fingerprint."""
    if not t.is_inference():
        return t._version
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // _SAMPLE)
    sample = flat[::step].double()
    return ("inference", t.data_ptr(), float(sample.sum()), float((sample * sample).sum()), float(flat[-1]))
