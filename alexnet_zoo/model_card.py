"""Model cards for weight specs: what, where from, how preprocessed, how good, licence, usage.

The same text goes to the Hub with ``weights publish`` and into the repository's ``weights/``
folder, generated from the spec so the two never disagree (a test checks the committed copies).
"""

from __future__ import annotations

from alexnet_zoo.weights import WeightSpec

__all__ = ["model_card"]


def model_card(spec: WeightSpec, repo_id: str | None = None) -> str:
    """A Hugging Face model card (YAML front matter + Markdown) for ``spec``."""
    p = spec.preprocessing
    load = f'alexnet(pretrained="hf-hub:{repo_id}")' if repo_id else f'{spec.arch}(pretrained="{spec.tag}")'
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

| step | value |
|---|---|
| resize | {p.resize_mode} to {p.resize} ({p.interpolation}) |
| crop | centre {p.crop}x{p.crop} |
| channels | {p.channel_order}, values 0-{p.scale:g} |
| mean | {", ".join(f"{v:g}" for v in p.mean)} |
| std | {", ".join(f"{v:g}" for v in p.std)} |

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


if __name__ == "__main__":  # python -m alexnet_zoo.model_card alexnet.bvlc_in1k > weights/alexnet.bvlc_in1k/README.md
    import sys

    from alexnet_zoo.weights import get_weight_spec

    sys.stdout.write(model_card(get_weight_spec(sys.argv[1])))
