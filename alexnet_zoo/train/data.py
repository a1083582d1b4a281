"""Datasets, samplers and loaders for training: what the workers do and what they leave to the GPU.

Workers decode a picture (upright, RGB: ``alexnet_zoo.images.read_image``), resize it to the
stored square (``alexnet_zoo.transforms.square_uint8``: the paper's short side 256 then the central
256x256, or BVLC's squash) and hand over uint8. Cropping, flipping, mean subtraction and colour
shifts happen on the batch (``augment.py``). With ``decode="device"`` the workers only read the file's bytes and
the JPEGs are decoded on the GPU in one batched nvJPEG call (``torchvision.io.decode_jpeg``).

Layouts: ``DIR/train`` and ``DIR/val`` as class folders (``ImageFolder``: class index = sorted
folder name, which for ImageNet's WNIDs is Caffe's and torchvision's order), or for ``val`` any
flat layout the evaluator reads (Caffe's ``val.txt``, a CSV, WNID-prefixed file names).
"""

from __future__ import annotations

import math
import multiprocessing
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode

from alexnet_zoo.categories import imagenet_categories
from alexnet_zoo.datasets import find_labelled_images
from alexnet_zoo.images import read_image
from alexnet_zoo.transforms import ResizeMode, square_uint8

__all__ = ["EpochSampler", "ImageFiles", "ResizeMode", "ShardSampler", "SyntheticImages", "collate_raw",
           "decode_batch", "folder_samples", "make_loader", "split_synthetic", "steps_per_epoch"]

_WNID = re.compile(r"n\d{8}")
WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
PICTURE_SUFFIXES = frozenset(IMG_EXTENSIONS) | {".gif", ".jfif"}  # all alexnet_zoo.images reads


# ---- datasets ------------------------------------------------------------------------------------

class SyntheticImages(Dataset):
    """``num_samples`` deterministic uint8 pictures; picture i is of class i % num_classes, with
    a colour and stripes of its class under noise of its own, so a network can learn them."""

    def __init__(self, num_samples: int, num_classes: int, size: int = 256, seed: int = 0) -> None:
        if num_samples < 1 or num_classes < 1:
            raise ValueError(f"a synthetic dataset needs samples and classes, got {num_samples}, {num_classes}")
        self.num_samples, self.num_classes, self.size, self.seed = num_samples, num_classes, size, seed
        self.classes = [f"class{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        label = index % self.num_classes
        klass = torch.Generator().manual_seed(self.seed * 7919 + label)
        colour = torch.randint(40, 216, (3, 1, 1), generator=klass).float()
        period = 4 + label % 7
        stripes = (torch.arange(self.size) // period % 2).float() * 40 - 20
        pattern = stripes[None, :, None] if label % 2 else stripes[None, None, :]
        noise = torch.randn(3, self.size, self.size, generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + index + 1)) * 25
        return (colour + pattern + noise).clamp(0, 255).to(torch.uint8), label


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in PICTURE_SUFFIXES


def folder_samples(root: str | Path, class_to_idx: dict[str, int] | None = None
                   ) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) pairs and class names of a folder: class subfolders (``ImageFolder``: labels
    by sorted folder name, or by ``class_to_idx``, the training set's, for a validation set), or
    any flat layout the evaluator reads (``alexnet_zoo.datasets.find_labelled_images``: Caffe's
    val.txt, a CSV, WNID-prefixed names). Flat layouts carry ImageNet class indices; when the
    training classes are a subset of ImageNet's WNIDs, they are mapped onto it by WNID."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected class folders, or pictures with a val.txt)")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        mapping = class_to_idx or {name: i for i, name in enumerate(subdirs)}
        unknown = [name for name in subdirs if name not in mapping]
        if unknown:
            raise ValueError(f"{root}: class folder(s) {unknown[:5]} are not among the training classes")
        samples = [(path, mapping[name]) for name in subdirs
                   for path in sorted((root / name).rglob("*")) if _is_image(path)]
        if not samples:
            raise FileNotFoundError(f"{root}: the class folders hold no pictures "
                                    f"({', '.join(sorted(PICTURE_SUFFIXES))})")
        return samples, sorted(mapping, key=mapping.get)
    try:
        found = find_labelled_images(root)
    except ValueError as err:
        raise FileNotFoundError(f"expected class folders, or a layout the evaluator reads: {err}") from err
    samples = [(Path(path), label) for path, label in found.samples]
    if class_to_idx is None:
        return samples, [str(i) for i in range(max(label for _, label in samples) + 1)]
    return _onto_training_classes(samples, class_to_idx, root), sorted(class_to_idx, key=class_to_idx.get)


def _onto_training_classes(samples: list[tuple[Path, int]], class_to_idx: dict[str, int],
                           root: Path) -> list[tuple[Path, int]]:
    wnids = [c.wnid for c in imagenet_categories()]
    names = sorted(class_to_idx, key=class_to_idx.get)
    if names == wnids or not all(_WNID.fullmatch(name) for name in names):
        return samples  # the full ImageNet order, or classes of another kind: indices as given
    mapped, foreign = [], set()
    for path, label in samples:
        wnid = wnids[label] if 0 <= label < len(wnids) else None
        if wnid in class_to_idx:
            mapped.append((path, class_to_idx[wnid]))
        else:
            foreign.add(wnid or str(label))
    if foreign:
        raise ValueError(f"{root}: validation classes {sorted(foreign)[:5]} are not among the training classes")
    return mapped


class ImageFiles(Dataset):
    """(path, label) pairs -> (uint8 (3, size, size), label), or (file bytes, label) when
    ``raw`` (decoding then happens on the device, :func:`decode_batch`)."""

    def __init__(self, samples: Sequence[tuple[Path, int]], size: int, mode: ResizeMode,
                 interpolation: str = "bilinear", raw: bool = False) -> None:
        self.samples = [(str(path), int(label)) for path, label in samples]  # light to send to workers
        self.size, self.mode, self.interpolation, self.raw = size, mode, interpolation, raw

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        name, label = self.samples[index]
        path = Path(name)
        if self.raw:
            return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), label
        return square_uint8(read_image(path), self.size, self.mode, self.interpolation), label


def collate_raw(batch: list[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    """Keep encoded files as a list (their lengths differ)."""
    return [data for data, _ in batch], torch.tensor([label for _, label in batch])


def decode_batch(files: list[Tensor], size: int, mode: ResizeMode, device: torch.device,
                 interpolation: str = "bilinear") -> Tensor:
    """Encoded pictures -> uint8 (N, 3, size, size) on ``device``. On CUDA the JPEGs go to
    nvJPEG in one batched call; other formats, and every picture on other devices, are decoded
    by torchvision on the CPU. EXIF orientation is applied; grey and CMYK become RGB."""
    out: list[Tensor | None] = [None] * len(files)
    jpeg = [i for i, data in enumerate(files) if data[:2].tolist() == [0xFF, 0xD8]]
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec as the successor of its decoders
        warnings.simplefilter("ignore", DeprecationWarning)
        if device.type == "cuda" and jpeg:
            decoded = torchvision.io.decode_jpeg([files[i] for i in jpeg], mode=ImageReadMode.RGB, device=device,
                                                 apply_exif_orientation=True)
            for i, image in zip(jpeg, decoded):
                out[i] = image
        for i, data in enumerate(files):
            if out[i] is None:
                try:
                    out[i] = torchvision.io.decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
                except RuntimeError as err:
                    raise ValueError(f"picture {i} of the batch cannot be decoded by torchvision ({err})") from err
    return torch.stack([square_uint8(image.to(device), size, mode, interpolation) for image in out])


# ---- samplers --------------------------------------------------------------------------------------

class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (one shuffle per epoch from ``seed + epoch``, this rank's share,
    drop_last) that can start part-way into an epoch, for an exact resume: the skipped batches
    are never loaded. Concatenating every rank's local batch i gives the single-process batch i
    as a set, so DDP averages the same gradient whatever the number of processes."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:  # type: ignore[override]
        """Shuffle for ``epoch`` and skip the first ``start`` samples of this rank's share."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler[int]):
    """Evaluation: rank r takes samples r, r + world, ... (no padding, so the sums reduced over
    ranks count each validation picture exactly once)."""

    def __init__(self, length: int, *, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, *, batch_size: int, sampler: Sampler, workers: int, pin_memory: bool,
                raw: bool = False, drop_last: bool = False, prefetch_factor: int = 4, seed: int = 0) -> DataLoader:
    """A loader that keeps a GPU fed: worker processes that stay alive across epochs, several
    batches prefetched per worker, pinned memory for asynchronous copies. An explicit generator
    keeps the loader from drawing on the global random state (which dropout uses).

    Workers start from a fork server, not a fork of the training process: a process forked after
    it has run OpenMP-parallel operators (CPU training) inherits libgomp's thread pool without its
    threads and can hang in the first parallel operator (seen with torchvision's EXIF flip)."""
    extra = {}
    if workers > 0:
        context = multiprocessing.get_context(WORKER_START)
        if WORKER_START == "forkserver":  # the server imports torch once; each worker forks from it ready
            context.set_forkserver_preload([__name__])
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor, "multiprocessing_context": context}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      drop_last=drop_last, collate_fn=collate_raw if raw else None,
                      generator=torch.Generator().manual_seed(seed), **extra)


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Optimizer steps in one epoch (incomplete last batches are dropped)."""
    return num_samples // global_batch


def split_synthetic(num_samples: int, num_classes: int, size: int,
                    seed: int) -> tuple[SyntheticImages, SyntheticImages]:
    """A synthetic training set and a validation set of a quarter of its size (other pictures)."""
    return (SyntheticImages(num_samples, num_classes, size, seed),
            SyntheticImages(max(num_classes, math.ceil(num_samples / 4)), num_classes, size, seed + 1))

