"""timm's descriptions of a model, typed: ``pretrained_cfg`` (what the weights are, the input they
expect, where they came from) and ``feature_info`` (each feature map's channels and stride), so code
written for timm reads an AlexNet without special cases.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from alexnet_zoo.models.config import AlexNetConfig, feature_sizes

__all__ = ["FeatureInfo", "PretrainedCfg", "feature_info"]


@dataclass(frozen=True, eq=False)
class PretrainedCfg(Mapping):
    """timm's ``pretrained_cfg``, typed: the weights' architecture and name, classes and input
    (``mean``/``std`` on timm's 0..1 pixel scale, in ``channel_order``: BVLC's are BGR), and their
    provenance. As a mapping it is the ``config.json`` document the weights were loaded with,
    ``meta`` (empty for random weights), so ``cfg.get("weights")`` / ``cfg["classes"]`` read it."""

    architecture: str | None = None
    tag: str | None = None  # the weights' tag ("bvlc_in1k" of "alexnet.bvlc_in1k"), None when unnamed
    num_classes: int = 1000
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None  # timm's "center" (short side, then crop) or "squash"
    interpolation: str | None = None
    channel_order: str | None = None
    first_conv: str = "conv1"
    classifier: str = "fc8"
    weights: dict[str, Any] | None = None  # the spec the weights were published under
    converted_from: str | None = None
    source: str | None = None
    license: str | None = None
    citation: str | None = None
    classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_size", "mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def describe(cls, arch: str | None, config: AlexNetConfig, preprocessing: Any = None,
                 meta: Mapping[str, Any] | None = None, num_classes: int | None = None) -> PretrainedCfg:
        """The cfg of weights in ``config``'s layout, fed as ``preprocessing`` says, recorded as ``meta``."""
        meta = dict(meta or {})
        weights = meta.get("weights") if isinstance(meta.get("weights"), dict) else None
        name = str(weights.get("name") or "") if weights else ""
        out: dict[str, Any] = {"architecture": meta.get("architecture", arch),
                               "tag": name.partition(".")[2] or None if name else None,
                               "num_classes": config.num_classes if num_classes is None else num_classes,
                               "weights": weights, "meta": meta,
                               **{k: meta.get(k) for k in ("converted_from", "source", "license", "citation",
                                                           "classes")}}
        if preprocessing is not None:
            p = preprocessing
            out.update(input_size=(config.in_chans, p.crop, p.crop), crop_pct=p.crop / p.resize,
                       crop_mode="squash" if p.resize_mode == "squash" else "center",
                       interpolation=p.interpolation, channel_order=p.channel_order,
                       mean=tuple(m / p.scale for m in p.mean), std=tuple(s / p.scale for s in p.std))
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples as lists); ``PretrainedCfg.from_dict`` rebuilds it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainedCfg:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PretrainedCfg):
            return self.to_dict() == other.to_dict()
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    # the mapping: the recorded config.json document
    def __getitem__(self, key: str) -> Any:
        return self.meta[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.meta)

    def __len__(self) -> int:
        return len(self.meta)


class FeatureInfo(list):
    """timm's ``feature_info`` of a features-only model: the chosen layers' dicts, with timm's helpers."""

    def channels(self) -> list[int]:
        return [d["num_chs"] for d in self]

    def reduction(self) -> list[int]:
        return [d["reduction"] for d in self]

    def module_name(self) -> list[str]:
        return [d["module"] for d in self]


def feature_info(config: AlexNetConfig) -> list[dict[str, Any]]:
    """conv1..conv5 (after ReLU, before their pool, as ``extract`` gives them) and fc6/fc7: channels
    and the input's stride at each, read off ``feature_sizes`` at a large input; fc6/fc7 slide with
    pool5's stride (their dense form, :class:`DenseAlexNet`)."""
    side = 4096
    sizes = feature_sizes(config, side)
    info = [{"num_chs": config.widths[i], "reduction": round(side / sizes[f"conv{i + 1}"]), "module": f"conv{i + 1}"}
            for i in range(5)]
    return info + [{"num_chs": config.hidden, "reduction": round(side / sizes["pool5"]), "module": name}
                   for name in ("fc6", "fc7")]
