"""What an exported model carries besides its graph, as string -> string pairs (ONNX's
``metadata_props``; a JSON file inside a TorchScript archive): the preprocessing its weights were
trained with, its architecture, the weights' name and the class labels, so a consumer in another
runtime needs nothing else to turn a picture into a named class.
"""

from __future__ import annotations

import json
from typing import Any

from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import feature_sizes

__all__ = ["FORMAT", "METADATA_KEYS", "export_metadata", "input_sides", "parse_metadata", "weights_name"]

FORMAT = "alexnet_zoo.export/1"  # the value of "format": the layout of these keys
# every key an export writes; the JSON-valued ones are decoded by parse_metadata
METADATA_KEYS = ("format", "arch", "weights", "preprocessing", "num_classes", "labels", "wnids", "input",
                 "output", "input_sides")
_JSON_KEYS = ("preprocessing", "num_classes", "labels", "wnids", "input_sides")


def weights_name(model: AlexNet) -> str:
    """The name the model's weights were published under (``alexnet.bvlc_in1k``), else where they
    were converted from, else "unnamed" (local or random weights)."""
    cfg = model.pretrained_cfg
    if cfg.weights and cfg.weights.get("name"):
        return str(cfg.weights["name"])
    return str(cfg.converted_from) if cfg.converted_from else "unnamed"


def input_sides(model: AlexNet, input_size: int | None) -> list[int]:
    """The square input sides the exported graph accepts: ``[input_size]`` when fixed, else every
    side whose pool5 map is 6x6 (fc6's input without adaptation), e.g. 199..230 for ``alexnet``."""
    if input_size is not None:
        return [input_size]
    return [s for s in range(model.min_input_size, 1024) if feature_sizes(model.config, s)["pool5"] == 6]


def _labels(model: AlexNet) -> tuple[list[str], list[str]]:
    """(names, WordNet ids) of fc8's outputs: the weights' own list, else ILSVRC-2012's 1000."""
    classes = model.pretrained_cfg.classes
    if classes and len(classes) == model.num_classes:
        return [str(c) for c in classes], []
    if model.num_classes == 1000:
        categories = imagenet_categories()
        return [c.name for c in categories], [c.wnid for c in categories]
    return [], []


def export_metadata(model: AlexNet, *, weights: str | None = None, input_size: int | None = None) -> dict[str, str]:
    """The pairs an export of ``model`` carries (keys: :data:`METADATA_KEYS`); ``weights`` names
    them where the model does not know its own name (default :func:`weights_name`)."""
    preprocessing = model.preprocessing or DEFAULT_PREPROCESSING.get(model.arch or "alexnet")
    labels, wnids = _labels(model)
    output = "fc8 logits (no softmax)" if model.num_classes else "fc7 activations after ReLU"
    values: dict[str, Any] = {
        "format": FORMAT, "arch": model.arch or "custom", "weights": weights or weights_name(model),
        "preprocessing": preprocessing.to_dict(), "num_classes": model.num_classes, "labels": labels,
        "wnids": wnids, "input": f"float32 (N, {model.config.in_chans}, H, W), preprocessed as 'preprocessing' says",
        "output": output, "input_sides": input_sides(model, input_size)}
    return {k: json.dumps(v) if k in _JSON_KEYS else str(v) for k, v in values.items()}


def parse_metadata(pairs: dict[str, str]) -> dict[str, Any]:
    """:func:`export_metadata`'s pairs read back, JSON values decoded (a consumer's inverse)."""
    return {k: json.loads(v) if k in _JSON_KEYS else v for k, v in pairs.items()}
