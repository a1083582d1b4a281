"""Pretrained weight specs: one frozen table, each entry named ``arch.tag``.

A spec says where the upstream file lives (mirrors in order, each pinned by sha256 and size:
the checksum, not the URL, decides what is accepted), what format it is in, which architecture
config it needs (BVLC's LRN is Caffe's convention with k=1), how pictures must be preprocessed,
what it scores and by which protocol, and under which licence it may be used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alexnet_zoo.data.categories import Category, imagenet_categories
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, ImagePreprocess, Preprocessing
from alexnet_zoo.errors import UnknownWeights
from alexnet_zoo.weights.sources import FileSource

__all__ = ["Metric", "WeightSpec", "get_weight_spec", "known_names", "list_pretrained"]

PAPER_CITATION = ("Krizhevsky, A., Sutskever, I. and Hinton, G. E. ImageNet Classification with Deep "
                  "Convolutional Neural Networks. NIPS 2012.")


@dataclass(frozen=True)
class Metric:
    """A published accuracy, with how and where it was measured."""

    top1: float  # percent
    top5: float
    dataset: str
    protocol: str
    source: str


@dataclass(frozen=True)
class WeightSpec:
    name: str  # "arch.tag"
    arch: str  # "alexnet" or "alexnet_owt"
    sources: tuple[FileSource, ...]  # tried in order
    upstream_format: str  # "onnx", "caffe" or "torchvision"
    config: dict[str, Any]  # AlexNetConfig fields the weights need
    preprocessing: Preprocessing
    num_params: int
    metrics: tuple[Metric, ...]
    license: str
    citation: str
    description: str
    checksum_note: str = ""  # where a source's pin is weaker than a full sha256, say so
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    def transforms(self) -> ImagePreprocess:
        """Exactly the preprocessing the metrics were measured with."""
        return self.preprocessing.transforms()

    @property
    def categories(self) -> tuple[Category, ...]:
        return imagenet_categories()


_ONNX_ZOO = "onnxmodelzoo/legacy_models"
_BVLC_ONNX = "validated/vision/classification/alexnet/model/bvlcalexnet-8.onnx"
_BVLC_SHA256 = "9a4dc22fd706a19462aaec3b08e027e0ef89daf63d123824f20b59b6de9a727b"
_BVLC_SIZE = 243_863_542

_SPECS: tuple[WeightSpec, ...] = (
    WeightSpec(
        name="alexnet.bvlc_in1k",
        arch="alexnet",
        sources=(
            FileSource(repo_id=_ONNX_ZOO, filename=_BVLC_ONNX, revision="main", sha256=_BVLC_SHA256, size=_BVLC_SIZE),
            FileSource(repo_id="onnx/models", filename=_BVLC_ONNX, revision="main", sha256=_BVLC_SHA256,
                       size=_BVLC_SIZE,
                       url=f"https://media.githubusercontent.com/media/onnx/models/main/{_BVLC_ONNX}"),
        ),
        upstream_format="onnx",
        config={"lrn_convention": "caffe", "lrn_k": 1.0, "init": "caffe"},
        preprocessing=BVLC_PREPROCESSING,
        num_params=60_965_224,
        metrics=(
            Metric(57.1, 80.2, "ILSVRC-2012 val", "centre crop 227 of the 256x256 image",
                   "BVLC/caffe models/bvlc_alexnet/readme.md"),
            Metric(54.80, 78.23, "ILSVRC-2012 val", "ONNX model zoo's own preprocessing at 224",
                   "onnx/models validated/vision/classification/alexnet/README.md"),
        ),
        license="unrestricted use (BVLC model licence)",
        citation=PAPER_CITATION + " Jia, Y. et al. Caffe: Convolutional Architecture for Fast Feature "
                 "Embedding. 2014.",
        description="BVLC's Caffe replication of the paper's network (Caffe -> Caffe2 -> ONNX opset 8), "
                    "iteration 360,000; biases initialised to 0.1, no PCA lighting.",
        checksum_note="Hub revision 'main' (the commit could not be looked up when the spec was written); "
                      "the sha256 from onnx/models' Git LFS pointer pins the content.",
    ),
    WeightSpec(
        name="alexnet_owt.tv_in1k",
        arch="alexnet_owt",
        sources=(
            FileSource(repo_id="pytorch/vision", filename="alexnet-owt-7be5be79.pth", revision="v0.29.1",
                       sha256="7be5be79", size=None, url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
        ),
        upstream_format="torchvision",
        config={},
        preprocessing=TORCHVISION_PREPROCESSING,
        num_params=61_100_840,
        metrics=(Metric(56.522, 79.066, "ILSVRC-2012 val", "resize 256, centre crop 224",
                        "torchvision.models.AlexNet_Weights.IMAGENET1K_V1"),),
        license="BSD-3-Clause (torchvision); trained on ImageNet (non-commercial research terms)",
        citation="Krizhevsky, A. One weird trick for parallelizing convolutional neural networks. 2014.",
        description="torchvision's single-tower AlexNet ('one weird trick' layout), trained by the "
                    "torchvision team.",
        checksum_note="torchvision publishes only the first 8 hex digits of this file's sha256 (its name); "
                      "that prefix is what is checked, as torchvision itself does.",
    ),
)


def list_pretrained() -> list[str]:
    """Names of all weight specs, ``arch.tag``."""
    return [spec.name for spec in _SPECS]


def known_names() -> list[str]:
    """Every name :func:`get_weight_spec` accepts: ``arch.tag``, a tag no other spec shares, an arch
    (its default spec)."""
    tags = [spec.tag for spec in _SPECS]
    return [*list_pretrained(), *sorted({t for t in tags if tags.count(t) == 1}),
            *sorted(dict.fromkeys(spec.arch for spec in _SPECS))]


def get_weight_spec(name: str, arch: str | None = None) -> WeightSpec:
    """The spec called ``name``: the one resolver every caller uses (builders, ``weights download``,
    model cards, publishing), so a name that works in one place works in all.

    ``name`` is ``arch.tag``, a bare ``tag``, or an arch (its default, first spec). A tag shared by
    several archs needs ``arch`` (the builder's) to pick one. Raises :class:`UnknownWeights` (a
    KeyError) listing the known names."""
    if not isinstance(name, str):
        raise UnknownWeights(f"a weight name must be a string, got {type(name).__name__}; "
                             f"known: {', '.join(known_names())}")
    for spec in _SPECS:
        if spec.name == name:
            return spec
    for spec in _SPECS:
        if spec.arch == name:
            return spec
    tagged = [spec for spec in _SPECS if spec.tag == name]
    if arch is not None and any(spec.arch == arch for spec in tagged):
        tagged = [spec for spec in tagged if spec.arch == arch]
    if len(tagged) == 1:
        return tagged[0]
    if tagged:
        raise UnknownWeights(f"weight tag {name!r} is ambiguous: {', '.join(s.name for s in tagged)}; "
                             f"give the full arch.tag name")
    raise UnknownWeights(f"no pretrained weights named {name!r}; known names: {', '.join(known_names())}")
