"""AlexNet as a traced TorchScript program (``torch.jit.trace`` + ``torch.jit.save``: a zip of code
and tensors that ``torch.jit.load`` runs without this package), with the export metadata inside.

The model is traced on its plain path: every CPU fast path (oneDNN, Winograd, the native LRN and
pooling kernels) steps aside while tracing (``torch.jit.is_tracing()``), so the program holds
torch operations only - a native kernel called through ctypes would be recorded as constants.
An int8 model is traced as it runs: torch's quantized operations with their packed weights (which
TorchScript saves and repacks for the loading machine's engine), LRN on the dequantised boundary.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from alexnet_zoo.deploy.metadata import export_metadata
from alexnet_zoo.errors import ExportError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import feature_sizes
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.paths import atomic_write

__all__ = ["METADATA_FILE", "export_torchscript", "trace"]

METADATA_FILE = "alexnet_zoo.json"  # the archive's extra file holding the metadata, as one JSON object
_FAST_PATH_OPS = ("mkldnn", "prim::PythonOp")  # what a leaked fast path would leave in the graph


class _Int8Program(nn.Module):
    """An int8 model with its packed layers registered as submodules: the tracer records calls to
    registered modules only, and the model keeps them in a plain dict (packed on first use)."""

    def __init__(self, model: QuantizedAlexNet) -> None:
        super().__init__()
        self.model = model
        self.packed = nn.ModuleDict(model.packed_layers())

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def trace(model: AlexNet | QuantizedAlexNet, input_size: int | None = None) -> torch.jit.ScriptModule:
    """``model`` (a CPU fp32 copy in eval mode, or the int8 model as it runs) traced on a batch of
    two ``input_size`` pictures (default: the config's input size). The program runs any batch;
    any side whose pool5 has the traced side's size (all of 199..230 for ``alexnet`` traced at 227)."""
    if not isinstance(model, (AlexNet, QuantizedAlexNet)):
        raise ExportError(f"expected an alexnet_zoo AlexNet to export, got {type(model).__name__}")
    side = input_size or model.config.input_size
    if feature_sizes(model.config, side)["pool5"] < 1:
        raise ExportError(f"input size {side}: too small for this network; it needs at least "
                          f"{model.min_input_size} pixels to reach pool5")
    if isinstance(model, QuantizedAlexNet):
        plain: nn.Module = _Int8Program(model.eval())
    else:
        with torch.device("meta"):  # no random initialisation to overwrite
            plain = AlexNet(model.config, arch=model.arch).eval()
        plain.load_state_dict({k: v.detach().to("cpu", torch.float32, copy=True)
                               for k, v in model.state_dict().items()}, assign=True)
    example = torch.randn(2, model.config.in_chans, side, side)
    with torch.no_grad(), warnings.catch_warnings():
        # the Python-level checks of the input (dims, sizes) are meant to be constants of the program,
        # and torch.jit's deprecation notice is no news to a caller who asked for TorchScript
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(plain, example, check_trace=False)
    leaked = [op for op in _FAST_PATH_OPS if op in str(traced.inlined_graph)]
    if leaked:  # a fast path that did not step aside: the program would be wrong or unportable
        raise RuntimeError(f"the traced graph holds {leaked}: a CPU fast path leaked into the export")
    return traced


def export_torchscript(model: AlexNet | QuantizedAlexNet, path: str | os.PathLike, *, input_size: int | None = None,
                       weights: str | None = None) -> Path:
    """Write ``model`` to ``path`` as a traced TorchScript archive, atomically, with the metadata
    of :func:`~alexnet_zoo.deploy.metadata.export_metadata` as the extra file :data:`METADATA_FILE`
    (``torch.jit.load(path, _extra_files={METADATA_FILE: ""})`` reads it back)."""
    traced = trace(model, input_size)
    side = input_size or model.config.input_size
    sides = input_size if feature_sizes(model.config, side)["pool5"] != 6 else None
    meta = export_metadata(model, weights=weights, input_size=sides)
    extra = {METADATA_FILE: json.dumps(meta)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    return path
