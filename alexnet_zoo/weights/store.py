"""Loading and saving weights: our folder format, the converted-weights cache, ``hf-hub:`` repos.

The format (like timm's): a folder with ``model.safetensors`` (our parameter names) and
``config.json`` (architecture, AlexNetConfig, preprocessing, provenance). Upstream files (ONNX,
Caffe, torchvision) are downloaded and verified once, converted once, and cached in that format
under ``cache_dir("weights")``; later loads read only safetensors, never pickle, never the network.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.errors import ConversionError, InvalidReference, UnknownWeights, WeightsError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import ARCHS, AlexNetConfig
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.paths import atomic_write, cache_dir, write_json
from alexnet_zoo.weights.config_file import (
    CONFIG_FILE,
    CONFIG_FORMAT_VERSION,
    WEIGHTS_FILE,
    check_shapes,
    check_weights_fit,
    read_config_file,
)
from alexnet_zoo.weights.sources import parse_hub_ref
from alexnet_zoo.weights.specs import WeightSpec, get_weight_spec, known_names

__all__ = ["Checkpoint", "WeightsRef", "cached_spec", "is_cached", "load_checkpoint", "resolve", "resolve_reference",
           "save_pretrained"]

# the config.json fields a re-saved model (an int8 copy, or the same weights written again) keeps:
# what its outputs are and where the weights came from; not "weights", "metrics" or "training",
# which describe one set of weights as they were made and measured
_CARRIED = ("classes", "license", "citation", "source")


@dataclass(frozen=True)
class Checkpoint:
    """Weights ready to load: which builder, its config, the tensors and where they came from."""

    arch: str
    config: AlexNetConfig
    state_dict: dict[str, Tensor]
    preprocessing: Preprocessing | None
    meta: dict[str, Any]


def save_pretrained(model: AlexNet | QuantizedAlexNet, directory: str | os.PathLike, *,
                    preprocessing: Preprocessing | None = None, spec: WeightSpec | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as ``directory/model.safetensors`` + ``config.json``, each atomically, so
    ``alexnet(pretrained=directory)`` rebuilds it exactly; an int8 model is stored as its int8
    tensors and scales, with ``precision: "int8"`` and how it was quantised in config.json. A
    model with no architecture name (a custom variant, ``model.arch`` None) is refused before
    anything is written. A model keeps what its loaded weights said of its inputs and outputs:
    their preprocessing (an int8 model's calibration used it too) and classes, license, citation
    and source; the arguments override them."""
    arch = model.arch
    if arch is None:
        raise ValueError("this model's layout is neither alexnet nor alexnet_owt; it cannot be saved by name")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kept = model.pretrained_cfg.meta  # the loaded config.json; {} for a model built here
    # a built model's preprocessing is its builder's default, not a record: written only where the
    # loaded weights recorded one (an int8 model's is always what its calibration used)
    recorded = model.preprocessing if isinstance(model, QuantizedAlexNet) or kept.get("preprocessing") else None
    preprocessing = preprocessing or (spec.preprocessing if spec else None) or recorded
    meta = {**{k: kept[k] for k in _CARRIED if k in kept}, **(meta or {})}
    info: dict[str, Any] = {"format": "alexnet_zoo", "format_version": CONFIG_FORMAT_VERSION, "architecture": arch,
                            "config": model.config.to_dict(),
                            "preprocessing": preprocessing.to_dict() if preprocessing else None,
                            "num_classes": model.config.num_classes, **(meta or {})}
    if spec is not None:
        info["weights"] = {"name": spec.name, "upstream_format": spec.upstream_format,
                           "sources": [s.describe() for s in spec.sources], "sha256": spec.sources[0].sha256,
                           "license": spec.license, "citation": spec.citation,
                           "metrics": [m.__dict__ for m in spec.metrics]}
    state = model.state_dict()
    if isinstance(model, QuantizedAlexNet):
        info.update(precision="int8", quantization=model.quantization)
        state = model.int8_state()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    write_json(directory / CONFIG_FILE, info)
    return directory


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a folder in our format (or a bare ``.safetensors`` file, which then needs the caller's
    architecture), checking that the two files agree."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if weights.suffix != ".safetensors" or not weights.is_file():
        raise FileNotFoundError(f"{path}: expected a folder with {WEIGHTS_FILE} + {CONFIG_FILE}, or a "
                                f".safetensors file")
    config_path = folder / CONFIG_FILE
    found = read_config_file(config_path, architectures=ARCHS) if config_path.is_file() else None
    if found is not None:  # from the header alone: nothing the config claims is allocated before it fits
        check_weights_fit(weights, found.config, found.arch, precision=found.info.get("precision", "fp32"))
    try:
        state_dict = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"{weights}: not a readable safetensors file ({err})") from err
    if found is None:
        return Checkpoint("", AlexNetConfig(), state_dict, None, {})
    return Checkpoint(found.arch, found.config, state_dict, found.preprocessing, found.info)


def resolve(pretrained: bool | str | os.PathLike | WeightsRef | None, arch: str, *,
            any_arch: bool = False) -> Checkpoint | None:
    """The one reading of every ``pretrained=`` value: None for no weights (False, None), else the
    checkpoint of True (the arch's default weights), a tag or ``arch.tag`` name,
    ``hf-hub:org/repo[@revision]``, a local folder / file (ours, or an upstream .onnx / .caffemodel /
    .pth converted on the fly), or a :class:`WeightsRef` from :func:`resolve_reference` (loaded as
    exactly what it names, nothing else). ``arch`` picks among same-named tags and converts upstream
    files; a weight name of another arch is an error unless ``any_arch``: the text a command line
    takes, where "none" is no weights, "default" the arch's default weights, an arch name that
    arch's default weights, and the checkpoint's ``arch`` says which was loaded."""
    if any_arch and isinstance(pretrained, str):
        pretrained = {"none": False, "default": True}.get(pretrained, pretrained)
        if pretrained in ARCHS:  # an arch name: its default weights
            arch, pretrained = pretrained, True
    if pretrained is False or pretrained is None:
        return None
    if isinstance(pretrained, WeightsRef):
        return _load_reference(pretrained, arch)
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
        try:
            spec = get_weight_spec(pretrained, arch)
        except UnknownWeights as err:
            raise UnknownWeights(f"pretrained={pretrained!r}: not a weight name, an hf-hub: repo or an existing "
                                 f"path; {err}") from None
        if spec.arch != arch and not any_arch:
            raise ValueError(f"{spec.name} are weights for {spec.arch}, not {arch}")
        return cached_spec(spec)
    raise ValueError(f"pretrained={pretrained!r}: expected True/False, a weight name, 'hf-hub:org/repo' or a path")


@dataclass(frozen=True)
class WeightsRef:
    """A weights reference checked by :func:`resolve_reference`: what it names, without ambiguity
    (a spec name never turns into a same-named folder, a path is absolute). ``str()`` gives the
    canonical text to record: ``arch.tag``, ``hf-hub:org/repo[@rev]`` or the absolute path."""

    kind: str  # "spec", "hf-hub" or "local"
    name: str  # the spec's arch.tag, the repo id "org/repo", or an absolute path
    revision: str | None = None  # hf-hub only
    arch: str | None = None  # the spec's architecture (None for hf-hub and local: their config.json says)

    def __str__(self) -> str:
        if self.kind == "hf-hub":
            return f"hf-hub:{self.name}" + (f"@{self.revision}" if self.revision else "")
        return self.name


def resolve_reference(ref: object, *, trusted: bool = False, allow_local: bool = False,
                      arch: str | None = None) -> WeightsRef:
    """Check a weights reference before anything loads it; ``resolve(ref, arch)`` (and so
    ``create_model`` / ``model_for_weights``) then loads exactly what it names.

    ``trusted=False`` is for references read from files someone else may have written (an index
    folder's ``info.json``, a shared config): only a registered spec name (``arch.tag``, a tag, an
    arch alias) or a valid ``hf-hub:org/repo[@revision]`` is accepted, never a path, unless
    ``allow_local=True``, which admits an existing folder in our format (``model.safetensors`` +
    ``config.json``) or a ``.safetensors`` file, never an upstream file (.onnx, .pth, ...) whose
    converter would parse foreign bytes. ``trusted=True`` also accepts any existing path.
    Raises :class:`InvalidReference` (a ValueError) naming the reference and what is allowed."""
    allowed = ("a weight name (" + ", ".join(known_names()) + "), 'hf-hub:org/repo[@revision]'"
               + (" or a folder in alexnet_zoo's format" if trusted or allow_local else ""))
    if not isinstance(ref, str) or not ref or len(ref) > 4096 or any(ord(c) < 32 or ord(c) == 127 for c in ref):
        raise InvalidReference(f"weights reference {ref!r}: expected {allowed}")
    if ref.startswith("hf-hub:"):
        repo_id, revision = parse_hub_ref(ref)
        return WeightsRef("hf-hub", repo_id, revision)
    if trusted and Path(ref).exists():  # as resolve() reads it: an existing path first
        return WeightsRef("local", os.path.abspath(ref))
    try:
        spec = get_weight_spec(ref, arch)
    except UnknownWeights:
        spec = None
    if spec is not None:
        return WeightsRef("spec", spec.name, arch=spec.arch)
    if allow_local:
        path = Path(ref)
        if path.is_dir() and _complete(path) or path.is_file() and path.suffix == ".safetensors":
            return WeightsRef("local", os.path.abspath(path))
        if path.exists():
            raise InvalidReference(f"weights reference {ref!r}: a local reference from an untrusted file must be "
                                   f"a folder with {WEIGHTS_FILE} + {CONFIG_FILE} or a .safetensors file")
    raise InvalidReference(f"weights reference {ref!r}: expected {allowed}")


def _load_reference(ref: WeightsRef, arch: str) -> Checkpoint:
    if ref.kind == "hf-hub":
        return _from_hub_repo(ref.name + (f"@{ref.revision}" if ref.revision else ""))
    if ref.kind == "spec":
        spec = get_weight_spec(ref.name)
        if spec.arch != arch:
            raise ValueError(f"{spec.name} are weights for {spec.arch}, not {arch}")
        return cached_spec(spec)
    path = Path(ref.name)
    if path.is_file() and path.suffix in (".onnx", ".caffemodel", ".pth", ".pt"):
        return _from_upstream(path, arch)
    return load_checkpoint(path)


def cached_spec(spec: WeightSpec, *, force: bool = False) -> Checkpoint:
    """The spec's weights from the converted cache, downloading, verifying and converting them
    first if needed (once, under a file lock shared by all processes).

    The converted folder is written whole into a hidden sibling and renamed into place, so a
    crash or a full disk never leaves half of it; a failed write is a :class:`WeightsError`
    naming the cache folder and the room it needs."""
    folder = _cache_folder(spec)
    if not force and _complete(folder):
        return load_checkpoint(folder)
    with FileLock(str(cache_dir("locks") / f"{spec.name}.lock")):
        if not force and _complete(folder):  # another process finished while we waited
            return load_checkpoint(folder)
        from alexnet_zoo.weights.download import fetch  # the Hub client loads only for a download

        for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # a crashed writer's (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        upstream = fetch(spec.sources, arch=spec.arch)
        converted = _from_upstream(upstream, spec.arch, spec.config)
        model = _model(converted)
        _write_cache_folder(model, folder, spec, upstream)
    return load_checkpoint(folder)


def _write_cache_folder(model: AlexNet, folder: Path, spec: WeightSpec, upstream: Path) -> None:
    """``save_pretrained`` into a temporary sibling, then one rename onto ``folder``."""
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_pretrained(model, tmp, spec=spec, meta={"converted_from": str(upstream)})
        if folder.exists():  # an incomplete or forced-over copy: only this lock holder touches it
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except (OSError, SafetensorError) as err:
        needed = sum(v.numel() * v.element_size() for v in model.state_dict().values())
        try:
            free = f", {shutil.disk_usage(folder.parent).free / 1e6:,.1f} MB free there"
        except OSError:
            free = ""
        raise WeightsError(f"could not write the converted {spec.name} weights to the cache folder {folder.parent} "
                           f"({type(err).__name__}: {err}); they need {needed / 1e6:,.1f} MB{free}: free space or "
                           f"set ALEXNET_ZOO_CACHE to a folder with room") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_cached(spec: WeightSpec) -> bool:
    """True when ``spec``'s converted weights are in the cache (no download needed)."""
    return _complete(_cache_folder(spec))


def _cache_folder(spec: WeightSpec) -> Path:
    return cache_dir("weights") / f"{spec.name}-{spec.sources[0].sha256[:12]}"


def _complete(folder: Path) -> bool:
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def _from_upstream(path: Path, arch: str, config: dict[str, Any] | None = None) -> Checkpoint:
    from alexnet_zoo.weights.convert import convert_file  # onnx and the Caffe schema load only to convert

    converted = convert_file(path, arch)
    if converted.arch != arch:
        raise ConversionError(f"{path}: holds {converted.arch} weights, not {arch}")
    merged = {**converted.config, **(config or {})}
    return Checkpoint(arch, ARCHS[arch].replace(**merged), converted.state_dict, None,
                      {"converted_from": str(path), "source": converted.source})


def _from_hub_repo(ref: str) -> Checkpoint:
    """``org/repo[@revision]`` from the Hub: validated before any request, each file checked
    against the Hub's own checksum of it (``hub.fetch_repo_files``)."""
    from alexnet_zoo.weights.download import fetch_repo_files  # the Hub client loads only for a download

    repo_id, revision = parse_hub_ref(ref)
    files = fetch_repo_files(repo_id, (WEIGHTS_FILE, CONFIG_FILE), revision)
    folder = files[WEIGHTS_FILE].parent
    if files[CONFIG_FILE].parent != folder:  # a commit landed between the two downloads
        raise WeightsError(f"hf-hub:{ref}: {WEIGHTS_FILE} and {CONFIG_FILE} came from different commits "
                           f"({folder.name}, {files[CONFIG_FILE].parent.name}); load it again, or pin a commit "
                           f"with @revision")
    return load_checkpoint(folder)


def _model(checkpoint: Checkpoint) -> AlexNet:
    check_shapes(checkpoint.config.parameter_shapes(),  # before the model is built: its size is the config's
                 {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in checkpoint.state_dict.items()},
                 f"{checkpoint.meta.get('converted_from', 'the converted weights')} does not fit its config")
    model = AlexNet(checkpoint.config, arch=checkpoint.arch)
    model.load_state_dict(checkpoint.state_dict)
    return model

