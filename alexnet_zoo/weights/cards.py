"""Model cards for weight specs: what, where from, how preprocessed, how good, licence, usage.

The same text goes to the Hub with ``weights publish`` and into the repository's ``weights/``
folder, generated from the spec so the two never disagree (a test checks the committed copies).
Weights that are no spec (fine-tuned, converted from elsewhere) get a card from their own
``config.json`` instead (``folder_model_card``): it states only what that file records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING, Preprocessing
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.weights.config_file import CONFIG_FILE, WEIGHTS_FILE
from alexnet_zoo.weights.specs import PAPER_CITATION, WeightSpec

__all__ = ["folder_model_card", "model_card"]


def model_card(spec: WeightSpec, repo_id: str | None = None) -> str:
    """A Hugging Face model card (YAML front matter + Markdown) for ``spec``."""
    p = spec.preprocessing
    load = f'{spec.arch}(pretrained="hf-hub:{repo_id}")' if repo_id else f'{spec.arch}(pretrained="{spec.tag}")'
    metrics = "\n".join(f"| {m.top1:.3f} | {m.top5:.3f} | {m.dataset} | {m.protocol} | {m.source} |"
                        for m in spec.metrics)
    sources = "\n".join(f"- `{s.describe()}`" + (f" (mirror: {s.url})" if s.url else "")
                        + f", sha256 `{s.sha256}`" + (f", {s.size:,} bytes" if s.size else "") for s in spec.sources)
    config = ", ".join(f"{k}={v!r}" for k, v in spec.config.items()) or "(the architecture's defaults)"
    return f"""---
library_name: alexnet_zoo
tags: [image-classification, alexnet, imagenet, pytorch]
datasets: [imagenet-1k]
license: other
---

# {spec.name}

{spec.description}

Architecture `{spec.arch}` ({spec.num_params:,} parameters), config overrides: {config}.

## Usage

```python
from alexnet_zoo import {spec.arch}
model = {load}.eval()
preprocess = model.preprocessing.transforms()   # PIL image -> (3, {p.crop}, {p.crop}) tensor
```

or `alexnet-zoo classify picture.jpg --pretrained {spec.name}`.

## Preprocessing (as the metrics were measured)

{_preprocessing_table(p)}

## Results

| top-1 % | top-5 % | dataset | protocol | source |
|---|---|---|---|---|
{metrics}

## Provenance

Upstream format: {spec.upstream_format}. Sources, tried in order; the checksum decides what is accepted:

{sources}

{spec.checksum_note}

## Licence

{spec.license}

## Citation

{spec.citation}
"""


def folder_model_card(info: Mapping[str, Any], repo_id: str | None = None, *, num_params: int | None = None) -> str:
    """A model card for weights that are no spec, from their ``config.json`` (``info``, as
    ``save_pretrained`` writes it). Metrics, licence, description and citation come from its
    ``metrics``, ``license``, ``description`` and ``citation`` entries (or its ``weights`` entry);
    what it does not record, the card says is not recorded."""
    arch = info["architecture"]
    weights = info.get("weights") or {}
    config = dict(info.get("config") or {})
    num_classes = config.get("num_classes", info.get("num_classes", 1000))
    base = ARCHS[arch].to_dict()
    overrides = ", ".join(f"{k}={v!r}" for k, v in config.items()
                          if k in base and base[k] != v and k not in ("extra", "num_classes"))
    overrides = overrides or "(the architecture's defaults)"
    recorded = info.get("preprocessing")
    p = Preprocessing.from_dict(recorded) if recorded else DEFAULT_PREPROCESSING[arch]
    metrics = info.get("metrics") or []  # not the ``weights`` entry's: those are the starting weights' results
    license_ = info.get("license") or weights.get("license")
    citation = info.get("citation") or weights.get("citation")
    citation = PAPER_CITATION if not citation or citation == PAPER_CITATION else f"{PAPER_CITATION}\n\n{citation}"
    where = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    title = repo_id or f"{arch} weights"
    description = info.get("description") or weights.get("description") or (
        f"AlexNet weights (`{arch}`, {num_classes} classes) in alexnet_zoo's format, published from a local folder.")
    if info.get("precision") == "int8":  # config.json is hostile: quantization's inner entries are unchecked
        calibration = (info.get("quantization") or {}).get("calibration")
        count = calibration.get("pictures") if isinstance(calibration, dict) else None
        description += (" These are **int8** weights (post-training static quantization"
                        + (f", calibrated on {count} pictures" if isinstance(count, int) else "")
                        + "): they run on the CPU with `--precision int8` (or `auto`).")
    size = f"{num_params:,} parameters, " if num_params else ""
    labels = ("the 1000 ImageNet-1k classes, in the usual synset order" if num_classes == 1000 else
              f"the publisher's own {num_classes} classes, whose names config.json does not record")
    provenance, results = _provenance(info, weights), _results(metrics)
    return f"""---
library_name: alexnet_zoo
tags: [image-classification, alexnet, pytorch]
license: other
---

# {title}

{description}

Architecture `{arch}` ({size}{num_classes} outputs: {labels}), config overrides: {overrides}.

## Usage

```python
from alexnet_zoo import {arch}
model = {arch}(pretrained="{where}").eval()
preprocess = model.preprocessing.transforms()   # PIL image -> (3, {p.crop}, {p.crop}) tensor
```

or `alexnet-zoo classify picture.jpg --arch {arch} --pretrained {where}`.

## Preprocessing ({"as recorded in config.json" if recorded else f"none recorded: {arch}'s default"})

{_preprocessing_table(p)}

## Results

{results}

## Provenance

{provenance}

## Licence

{license_ or "Not recorded in config.json: ask the publisher before reusing these weights."}

## Citation

{citation}
"""


def _provenance(info: Mapping[str, Any], weights: Mapping[str, Any]) -> str:
    """The card's provenance lines: the spec the weights started from, upstream files, the format."""
    lines = []
    if weights.get("name"):
        started = f"- started from alexnet_zoo's `{weights['name']}`"
        if weights.get("metrics"):
            started += " (whose published results are for those weights, not these: see its own card)"
        lines.append(started)
    lines += [f"- upstream: `{s}`" for s in weights.get("sources", [])]
    if info.get("converted_from"):
        lines.append(f"- converted from `{info['converted_from']}`")
    lines.append(f"- format: `{info.get('format', 'alexnet_zoo')}` version {info.get('format_version', '?')} "
                 f"(`{WEIGHTS_FILE}` + `{CONFIG_FILE}`)")
    return "\n".join(lines)


def _results(metrics: list[Mapping[str, Any]]) -> str:
    """The card's results table, or what config.json would need to record one."""
    if not metrics:
        return ("No accuracy is recorded in `config.json` (a `metrics` list of `top1`, `top5`, `dataset`, "
                "`protocol`, `source` entries, e.g. through `save_pretrained(..., meta={...})`).")
    return ("| top-1 % | top-5 % | dataset | protocol | source |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {_percent(m.get('top1'))} | {_percent(m.get('top5'))} | {m.get('dataset', '?')} | "
        f"{m.get('protocol', '?')} | {m.get('source', '?')} |" for m in metrics))


def _preprocessing_table(p: Preprocessing) -> str:
    return f"""| step | value |
|---|---|
| resize | {p.resize_mode} to {p.resize} ({p.interpolation}) |
| crop | centre {p.crop}x{p.crop} |
| channels | {p.channel_order}, values 0-{p.scale:g} |
| mean | {", ".join(f"{v:g}" for v in p.mean)} |
| std | {", ".join(f"{v:g}" for v in p.std)} |"""


def _percent(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "?"


def main(argv: list[str] | None = None) -> int:
    """``python -m alexnet_zoo.weights.cards NAME > weights/NAME/README.md``: any name the builders
    accept (``arch.tag``, a tag, an arch)."""
    import sys

    from alexnet_zoo.errors import UnknownWeights
    from alexnet_zoo.weights.specs import get_weight_spec, known_names

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m alexnet_zoo.weights.cards NAME (one of {', '.join(known_names())})", file=sys.stderr)
        return 2
    try:
        spec = get_weight_spec(args[0])
    except UnknownWeights as err:
        print(f"alexnet_zoo.weights.cards: error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(model_card(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
