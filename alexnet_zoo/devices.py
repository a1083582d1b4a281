"""Which torch device a ``--device`` / ``device=`` value means, checked before any work starts.

``torch.device("cuda")`` is accepted on a machine without a GPU and fails later, deep inside the
first ``.to()``, with a message about how torch was built. Commands call :func:`resolve_device`
first, so a wrong device is one clear error naming the value and what this machine offers.
Apple's ``mps`` is accepted wherever ``cuda`` is. The one rule every command and the training
recipe share: which devices exist here (:func:`device_issue`), which one ``auto`` means
(:func:`best_device`) and which copies may be asynchronous (:func:`non_blocking`); callers phrase
their own messages. Imports torch only (cheap for the CLI).
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["DEVICE_HELP", "DeviceIssue", "available_devices", "best_device", "device_issue", "non_blocking",
           "resolve_device"]

DEVICE_HELP = "auto (a CUDA GPU, else Apple's mps, else the CPU), cpu, cuda, cuda:N or mps"

DeviceIssue = Literal["no-cuda", "cuda-index", "no-mps", "mps-index", "unsupported"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def best_device(processes: int = 1) -> torch.device:
    """CUDA if present, then Apple's MPS, else the CPU. MPS only for one process: torch.distributed
    has no backend for MPS tensors, so ``processes`` > 1 (torchrun) fall back to the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available() and processes == 1:
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device names this machine can run on, for error messages."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def device_issue(device: torch.device) -> DeviceIssue | None:
    """What keeps this machine from running on ``device``, or None when it can: no CUDA GPU, a GPU
    index past the last one, no MPS, an MPS index other than 0, or a type other than cpu, cuda, mps."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no-cuda"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return "cuda-index"
        return None
    if device.type == "mps":
        if not _mps_available():
            return "no-mps"
        return "mps-index" if device.index not in (None, 0) else None
    return "unsupported"


def non_blocking(device: torch.device) -> bool:
    """Whether copies to ``device`` may be non-blocking from pinned memory: CUDA only. MPS and the
    CPU copy in order."""
    return device.type == "cuda"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``name`` as a device this machine has: None or "auto" -> :func:`best_device`; "cpu",
    "cuda", "cuda:N", "mps" are checked; anything else, or a GPU that is not there, is a
    ValueError saying what was asked for and what is available."""
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        return best_device()
    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(name.strip().lower())
        except (RuntimeError, ValueError):
            raise ValueError(f"device {name!r} is not a device name; expected {DEVICE_HELP}") from None
    issue = device_issue(device)
    if issue is None:
        return device
    here = ", ".join(available_devices())
    if issue == "no-cuda":
        why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise ValueError(f"device {str(name)!r}: {why}; available here: {here}")
    if issue == "cuda-index":
        raise ValueError(f"device {str(name)!r}: there are {torch.cuda.device_count()} CUDA GPU(s), "
                         f"numbered from 0; available here: {here}")
    if issue == "no-mps":
        raise ValueError(f"device {str(name)!r}: Apple's MPS is not available on this machine; "
                         f"available here: {here}")
    if issue == "mps-index":
        raise ValueError(f"device {str(name)!r}: there is one MPS device, mps (or mps:0)")
    raise ValueError(f"device {str(name)!r} is not supported; expected {DEVICE_HELP}")
