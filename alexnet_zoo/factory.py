"""The builders users call: ``alexnet(...)`` and ``alexnet_owt(...)``, one path for every model:
base config -> the weights' config -> the caller's overrides -> build -> load (-> new head)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING
from alexnet_zoo.models.alexnet import AlexNet, AlexNetFeatures
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.models.pretrained_cfg import PretrainedCfg
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.weights.store import Checkpoint, resolve

__all__ = ["alexnet", "alexnet_owt", "create_model", "model_for_weights"]

Pretrained = bool | str | os.PathLike | None


def create_model(arch: str, *, pretrained: Pretrained = False, num_classes: int | None = None,
                 features_only: bool = False, out_indices: int | Iterable[int] | None = None,
                 **config: Any) -> AlexNet | QuantizedAlexNet | AlexNetFeatures:
    """Build ``arch`` ("alexnet" or "alexnet_owt"). With weights, their config applies first and
    ``config`` overrides it; a ``num_classes`` other than the weights' keeps every layer but fc8,
    which is freshly initialised (fine-tuning), instead of failing. ``features_only=True`` gives
    timm's feature-map model (:class:`~alexnet_zoo.models.alexnet.AlexNetFeatures`): ``out_indices`` into
    ``model.feature_info`` (conv1..conv5, fc6, fc7; default the five convs)."""
    if out_indices is not None and not features_only:
        raise ValueError("out_indices applies with features_only=True")
    model = _build(arch, pretrained, num_classes, config, any_arch=False)
    if not features_only:
        return model
    return AlexNetFeatures(model, (0, 1, 2, 3, 4) if out_indices is None else out_indices)


def _build(arch: str, pretrained: Pretrained, num_classes: int | None, config: dict[str, Any], *,
           any_arch: bool) -> AlexNet | QuantizedAlexNet:
    """The one path from ``pretrained=`` to a model. ``any_arch``: a weight name or a folder in our
    format builds the arch its checkpoint holds instead of ``arch`` (an hf-hub repo, a file or a
    :class:`~alexnet_zoo.weights.store.WeightsRef` must hold ``arch``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    checkpoint = resolve(pretrained, arch, any_arch=any_arch)
    if checkpoint is None:
        model = AlexNet(ARCHS[arch].replace(num_classes=1000 if num_classes is None else num_classes, **config),
                        arch=arch)
        model.preprocessing = DEFAULT_PREPROCESSING[arch]
        return model
    if checkpoint.arch and checkpoint.arch != arch:
        if not (any_arch and _names_its_arch(pretrained)):
            raise ValueError(f"{pretrained}: holds {checkpoint.arch} weights; build it with {checkpoint.arch}(...)")
        arch = checkpoint.arch
    if checkpoint.meta.get("precision") == "int8":
        return _int8_model(checkpoint, pretrained, num_classes, config)
    base = checkpoint.config if checkpoint.arch else ARCHS[arch]
    stored_classes = checkpoint.state_dict["fc8.weight"].shape[0] if "fc8.weight" in checkpoint.state_dict else 0
    with torch.device("meta"):  # no random initialisation to overwrite: 0.5 s of a one-picture classify
        model = AlexNet(base.replace(num_classes=stored_classes, **config), arch=arch)
    model.load_state_dict(_float32(checkpoint.state_dict), assign=True)
    if num_classes is not None and num_classes != stored_classes:
        model.reset_classifier(num_classes)
    model.preprocessing = checkpoint.preprocessing or DEFAULT_PREPROCESSING[arch]
    # what the weights are and where they came from, as timm keeps it (the mapping: checkpoint.meta)
    model.pretrained_cfg = PretrainedCfg.describe(arch, base, model.preprocessing, checkpoint.meta,
                                                  num_classes=stored_classes)
    return model


def _int8_model(checkpoint: Checkpoint, pretrained: Pretrained, num_classes: int | None,
                config: dict[str, Any]) -> QuantizedAlexNet:
    """A quantised checkpoint as it was calibrated: its layers cannot be changed or re-headed."""
    if config or (num_classes is not None and num_classes != checkpoint.config.num_classes):
        raise ValueError(f"{pretrained}: int8 weights run as they were quantised; config changes and a new "
                         f"num_classes need the fp32 weights (quantize again afterwards)")
    model = QuantizedAlexNet(checkpoint.config, checkpoint.state_dict, arch=checkpoint.arch,
                             quantization=checkpoint.meta.get("quantization"), where=str(pretrained))
    model.preprocessing = checkpoint.preprocessing or DEFAULT_PREPROCESSING[checkpoint.arch]
    model.pretrained_cfg = PretrainedCfg.describe(checkpoint.arch, checkpoint.config, model.preprocessing,
                                                  checkpoint.meta)
    return model


def _names_its_arch(pretrained: Pretrained) -> bool:
    """A weight name or a folder: what a command line names says which arch it is."""
    return (isinstance(pretrained, (str, os.PathLike)) and not os.fspath(pretrained).startswith("hf-hub:")
            and not os.path.isfile(pretrained))


def _float32(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters as fp32, like an initialised model's (``assign=True`` keeps the stored dtype)."""
    return {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state_dict.items()}


def model_for_weights(pretrained: Pretrained, *, arch: str = "alexnet") -> AlexNet | QuantizedAlexNet:
    """For weights named as text (command lines, configs): "none" builds ``arch`` with random
    weights, "default" with its default weights, an arch name with that arch's default weights; a
    full name (``alexnet_owt.tv_in1k``) or a folder in our format builds the arch it belongs to;
    anything else is ``create_model(arch, pretrained=...)`` (the reading is
    :func:`~alexnet_zoo.weights.store.resolve`'s, with ``any_arch``)."""
    return _build(arch, pretrained, None, {}, any_arch=True)


def alexnet(*, pretrained: Pretrained = False, num_classes: int | None = None,
            **config: Any) -> AlexNet | AlexNetFeatures:
    """The paper's AlexNet: two towers (groups=2 on conv2/4/5), LRN after conv1/conv2, 227 input.

    ``pretrained``: True (BVLC's weights), a tag (``"bvlc_in1k"``), ``"hf-hub:org/repo"``, or a
    local folder / file. ``config`` overrides any :class:`AlexNetConfig` field, e.g.
    ``lrn_convention="caffe", lrn_k=1``; ``features_only=True`` (and ``out_indices``) as in
    :func:`create_model`."""
    return create_model("alexnet", pretrained=pretrained, num_classes=num_classes, **config)


def alexnet_owt(*, pretrained: Pretrained = False, num_classes: int | None = None,
                **config: Any) -> AlexNet | AlexNetFeatures:
    """torchvision's one-tower layout (64/192/384/256/256, no LRN, no groups), same API;
    ``pretrained=True`` gives torchvision's weights."""
    return create_model("alexnet_owt", pretrained=pretrained, num_classes=num_classes, **config)
