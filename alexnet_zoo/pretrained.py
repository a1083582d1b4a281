"""Loading and saving weights: our folder format, the converted-weights cache, ``hf-hub:`` repos.

The format (like timm's): a folder with ``model.safetensors`` (our parameter names) and
``config.json`` (architecture, AlexNetConfig, preprocessing, provenance). Upstream files (ONNX,
Caffe, torchvision) are downloaded and verified once, converted once, and cached in that format
under ``cache_dir("weights")``; later loads read only safetensors, never pickle, never the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import Tensor

from alexnet_zoo.config import AlexNetConfig, check_shapes, check_weights_fit, read_config_file
from alexnet_zoo.errors import ConversionError, WeightsError
from alexnet_zoo.model import AlexNet
from alexnet_zoo.paths import atomic_write, cache_dir, write_json
from alexnet_zoo.factory import BASE_CONFIGS
from alexnet_zoo.transforms import Preprocessing
from alexnet_zoo.weights import WeightSpec, get_weight_spec

__all__ = ["Checkpoint", "cached_spec", "is_cached", "load_checkpoint", "resolve", "save_pretrained"]

FORMAT_VERSION = 1

_WEIGHTS_FILE, _CONFIG_FILE = "model.safetensors", "config.json"


@dataclass(frozen=True)
class Checkpoint:
    """Weights ready to load: which builder, its config, the tensors and where they came from."""

    arch: str
    config: AlexNetConfig
    state_dict: dict[str, Tensor]
    preprocessing: Preprocessing | None
    meta: dict[str, Any]


def save_pretrained(model: AlexNet, directory: str | os.PathLike, *, preprocessing: Preprocessing | None = None,
                    spec: WeightSpec | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as ``directory/model.safetensors`` + ``config.json``, each atomically, so
    ``alexnet(pretrained=directory)`` rebuilds it exactly."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arch = _arch_of(model.config)
    preprocessing = preprocessing or (spec.preprocessing if spec else None)
    info: dict[str, Any] = {"format": "alexnet_zoo", "format_version": FORMAT_VERSION, "architecture": arch,
                            "config": model.config.to_dict(),
                            "preprocessing": preprocessing.to_dict() if preprocessing else None,
                            "num_classes": model.config.num_classes, **(meta or {})}
    if spec is not None:
        info["weights"] = {"name": spec.name, "upstream_format": spec.upstream_format,
                           "sources": [s.describe() for s in spec.sources], "sha256": spec.sources[0].sha256,
                           "license": spec.license, "citation": spec.citation,
                           "metrics": [m.__dict__ for m in spec.metrics]}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / _WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    write_json(directory / _CONFIG_FILE, info)
    return directory


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a folder in our format (or a bare ``.safetensors`` file, which then needs the caller's
    architecture), checking that the two files agree."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path / _WEIGHTS_FILE if path.is_dir() else path
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise FileNotFoundError(f"{path}: expected a folder with {_WEIGHTS_FILE} + {_CONFIG_FILE}, or a "
                                f".safetensors file")
    config_path = folder / _CONFIG_FILE
    found = read_config_file(config_path, architectures=BASE_CONFIGS) if config_path.is_file() else None
    if found is not None:  # from the header alone: nothing the config claims is allocated before it fits
        check_weights_fit(weights, found.config, found.arch)
    try:
        state_dict = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"{weights}: not a readable safetensors file ({err})") from err
    if found is None:
        return Checkpoint("", AlexNetConfig(), state_dict, None, {})
    return Checkpoint(found.arch, found.config, state_dict, found.preprocessing, found.info)


def resolve(pretrained: bool | str | os.PathLike, arch: str) -> Checkpoint:
    """Turn any ``pretrained=`` value into a checkpoint: True (the arch's default weights), a tag
    or ``arch.tag`` name, ``hf-hub:org/repo[@revision]``, or a local folder / file (ours, or an
    upstream .onnx / .caffemodel / .pth converted on the fly)."""
    if pretrained is True:
        return cached_spec(get_weight_spec(arch))
    if isinstance(pretrained, str) and pretrained.startswith("hf-hub:"):
        return _from_hub_repo(pretrained[len("hf-hub:"):])
    path = Path(pretrained) if isinstance(pretrained, (str, os.PathLike)) else None
    if path is not None and path.exists():
        if path.is_file() and path.suffix in (".onnx", ".caffemodel", ".pth", ".pt"):
            return _from_upstream(path, arch)
        return load_checkpoint(path)
    if isinstance(pretrained, str):
        name = pretrained if "." in pretrained else f"{arch}.{pretrained}"
        try:
            spec = get_weight_spec(name)
        except KeyError:
            raise ValueError(f"pretrained={pretrained!r}: not a weight name, an hf-hub: repo or an existing "
                             f"path") from None
        if spec.arch != arch:
            raise ValueError(f"{spec.name} are weights for {spec.arch}, not {arch}")
        return cached_spec(spec)
    raise ValueError(f"pretrained={pretrained!r}: expected True/False, a weight name, 'hf-hub:org/repo' or a path")


def cached_spec(spec: WeightSpec, *, force: bool = False) -> Checkpoint:
    """The spec's weights from the converted cache, downloading, verifying and converting them
    first if needed (once, under a file lock shared by all processes)."""
    folder = _cache_folder(spec)
    if not force and _complete(folder):
        return load_checkpoint(folder)
    with FileLock(str(cache_dir("locks") / f"{spec.name}.lock")):
        if not force and _complete(folder):  # another process finished while we waited
            return load_checkpoint(folder)
        from alexnet_zoo.hub import fetch

        upstream = fetch(spec.sources)
        converted = _from_upstream(upstream, spec.arch, spec.config)
        model = _model(converted)
        save_pretrained(model, folder, spec=spec, meta={"converted_from": str(upstream)})
    return load_checkpoint(folder)


def is_cached(spec: WeightSpec) -> bool:
    """True when ``spec``'s converted weights are in the cache (no download needed)."""
    return _complete(_cache_folder(spec))


def _cache_folder(spec: WeightSpec) -> Path:
    return cache_dir("weights") / f"{spec.name}-{spec.sources[0].sha256[:12]}"


def _complete(folder: Path) -> bool:
    return (folder / _WEIGHTS_FILE).is_file() and (folder / _CONFIG_FILE).is_file()


def _from_upstream(path: Path, arch: str, config: dict[str, Any] | None = None) -> Checkpoint:
    from alexnet_zoo.convert import convert_file

    converted = convert_file(path, arch)
    if converted.arch != arch:
        raise ConversionError(f"{path}: holds {converted.arch} weights, not {arch}")
    merged = {**converted.config, **(config or {})}
    return Checkpoint(arch, BASE_CONFIGS[arch].replace(**merged), converted.state_dict, None,
                      {"converted_from": str(path), "source": converted.source})


def _from_hub_repo(ref: str) -> Checkpoint:
    from huggingface_hub import hf_hub_download

    repo_id, _, revision = ref.partition("@")
    try:
        files = [hf_hub_download(repo_id, name, revision=revision or None) for name in (_WEIGHTS_FILE, _CONFIG_FILE)]
    except Exception as err:  # huggingface_hub raises a family of HTTP / offline errors
        raise WeightsError(f"hf-hub:{ref}: could not fetch {_WEIGHTS_FILE} + {_CONFIG_FILE} ({err})") from err
    return load_checkpoint(Path(files[0]).parent)


def _model(checkpoint: Checkpoint) -> AlexNet:
    check_shapes(checkpoint.config.parameter_shapes(),  # before the model is built: its size is the config's
                 {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in checkpoint.state_dict.items()},
                 f"{checkpoint.meta.get('converted_from', 'the converted weights')} does not fit its config")
    model = AlexNet(checkpoint.config)
    model.load_state_dict(checkpoint.state_dict)
    return model


def _arch_of(config: AlexNetConfig) -> str:
    structural = ("widths", "groups", "kernels", "paddings", "conv1_stride", "lrn")
    for arch, base in BASE_CONFIGS.items():
        if all(getattr(config, f) == getattr(base, f) for f in structural):
            return arch
    raise ValueError("this model's layout is neither alexnet nor alexnet_owt; it cannot be saved by name")
