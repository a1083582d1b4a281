"""The evaluation loop: a labelled image set through a model under one protocol, batched, with
unreadable files reported rather than fatal; the dataset a protocol needs; and the naming and
re-indexing of classes for weights trained on classes other than ImageNet's 1,000 in order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from alexnet_zoo.data.batching import LoaderMode, iterate_batches
from alexnet_zoo.data.categories import WNID, imagenet_categories
from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.devices import resolve_device
from alexnet_zoo.eval._device import prepare, synchronize
from alexnet_zoo.eval.metrics import Accuracy, EvalResult
from alexnet_zoo.eval.precision import autocast, model_precision
from alexnet_zoo.eval.protocols import PROTOCOLS, image_sizes, predict

if TYPE_CHECKING:  # the decoders load when a dataset is built, not when the CLI builds its parser
    from alexnet_zoo.data.datasets import ImageDataset

__all__ = ["class_labels", "dataset_for", "evaluate", "onto_model_classes"]


def class_labels(model: nn.Module) -> list[dict[str, str]] | None:
    """Per class index, what to call it: the class ids trained weights record (``config.json``'s
    ``classes``, e.g. the WNIDs of the training folders), WNIDs with their names from the bundled
    synset list; ImageNet's 1,000 for a 1000-class model that records none; None when unknown."""
    num_classes = model.config.num_classes
    recorded = (getattr(model, "pretrained_cfg", None) or {}).get("classes")
    if isinstance(recorded, list) and len(recorded) == num_classes and all(isinstance(c, str) for c in recorded):
        names = {c.wnid: c.name for c in imagenet_categories()}
        return [{"wnid": c, "name": names[c]} if WNID.fullmatch(c) and c in names else {"name": c}
                for c in recorded]
    if num_classes == 1000:
        return [{"wnid": c.wnid, "name": c.name} for c in imagenet_categories()]
    return None


def onto_model_classes(samples: Sequence[tuple[str, int]], model: nn.Module) -> tuple[list[tuple[str, int]], int]:
    """ImageNet-indexed samples (what every dataset layout gives) -> the model's own class indices,
    where its weights record WNID classes other than ImageNet's 1,000 in order (a model trained on
    200 WNID folders): each label goes through its WNID. Samples of classes the model does not know
    are left out; their number is returned with the rest."""
    labels = class_labels(model)
    imagenet = [c.wnid for c in imagenet_categories()]
    if labels is None or not all("wnid" in label for label in labels) or [l["wnid"] for l in labels] == imagenet:
        return list(samples), 0  # ImageNet's order, or class ids of another kind: indices as given
    position = {label["wnid"]: i for i, label in enumerate(labels)}
    kept = [(path, position[imagenet[label]]) for path, label in samples
            if 0 <= label < len(imagenet) and imagenet[label] in position]
    return kept, len(samples) - len(kept)


def dataset_for(samples: Sequence[tuple[str, int]], model: nn.Module, protocol: str,
                scales: Sequence[int] | None = None, preprocessing: Preprocessing | None = None) -> ImageDataset:
    """The :class:`ImageDataset` of ``samples`` that ``protocol`` needs for ``model``'s preprocessing."""
    # startup: the decoders load when a dataset is built (see the TYPE_CHECKING import)
    from alexnet_zoo.data.datasets import ImageDataset

    preprocessing = preprocessing or model.preprocessing
    return ImageDataset(samples, preprocessing, image_sizes(protocol, preprocessing, scales))


def evaluate(model: nn.Module, dataset: ImageDataset, protocol: str = "center", *, batch_size: int = 32,
             workers: int = 0, device: torch.device | str | None = None, precision: str = "auto", flip: bool = True,
             preprocessing: Preprocessing | None = None, keep_predictions: bool = True, worker_niceness: int = 10,
             loader: LoaderMode = "auto", progress: bool = True) -> EvalResult:
    """Top-1 / top-5 accuracy of ``model`` on ``dataset`` under ``protocol`` (see :func:`dataset_for`).

    ``workers`` DataLoader processes decode while the model computes (on CUDA with pinned memory
    and channels-last, under float16 autocast unless ``precision`` says otherwise); ``flip`` (dense
    only) adds the mirrored image. The model is moved to ``device`` and put in eval mode.

    ``loader`` (:mod:`alexnet_zoo.data.batching`): ``processes`` decode beside the model, ``threads``
    decode each batch between forward passes; ``auto`` takes threads when the model's CPU threads
    cover every core. Worker processes run ``worker_niceness`` (0-19) steps below the model in CPU
    priority, so they mostly take the time the model leaves."""
    # startup: the progress bar and the decoders load with the first evaluation, not with the CLI's parser
    from tqdm.auto import tqdm

    from alexnet_zoo.data.datasets import collate

    device = resolve_device(device)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    precision = model_precision(model, precision, device)
    model, preprocess, dense = prepare(model, protocol, device, preprocessing or dataset.preprocessing)
    if protocol != "dense" and dataset.sizes != (preprocess.preprocessing.resize,):
        raise ValueError(f"the {protocol!r} protocol needs the {preprocess.preprocessing.resize}x"
                         f"{preprocess.preprocessing.resize} images, the dataset gives sides {dataset.sizes}")
    order = [range(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    batches = iterate_batches(dataset, order, collate, workers=workers, mode=loader, device=device,
                              worker_niceness=worker_niceness)
    accuracy: Accuracy | None = None
    failed: list[tuple[str, str]] = []
    kept: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    bar = tqdm(total=len(dataset), unit="img", desc=f"{protocol} {'/'.join(map(str, dataset.sizes))}",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device, precision), bar:
        for batch in batches:
            failed += [(dataset.samples[i][0], error) for i, error in batch.failed]
            if len(batch):
                images = [x.to(device, non_blocking=True) for x in batch.images]
                probs = predict(model, images, protocol, preprocess, dense=dense, flip=flip)
                accuracy = accuracy or Accuracy(probs.shape[-1], device=device)
                top_p, top_i = accuracy.update(probs, batch.labels.to(device, non_blocking=True))
                if keep_predictions:
                    kept.append((batch.indices, batch.labels, top_i, top_p))
            bar.update(len(batch) + len(batch.failed))
            if failed:
                bar.set_postfix(unreadable=len(failed), refresh=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    accuracy = accuracy or Accuracy(1)
    result = EvalResult(protocol, dataset.sizes, accuracy.images, accuracy.top1, accuracy.top5, seconds, failed,
                        accuracy.per_class(class_labels(model) if hasattr(model, "config") else None))
    if keep_predictions:
        k = kept[0][2].shape[1] if kept else 5
        result.paths = [dataset.samples[i][0] for part in kept for i in part[0].tolist()]
        result.labels = torch.cat([part[1] for part in kept]) if kept else torch.empty(0, dtype=torch.long)
        result.top_indices = torch.cat([part[2].cpu() for part in kept]) if kept else torch.empty(0, k, dtype=torch.long)
        result.top_probs = torch.cat([part[3].float().cpu() for part in kept]) if kept else torch.empty(0, k)
    return result
