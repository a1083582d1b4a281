"""Datasets, samplers and loaders for training: what the workers do and what they leave to the GPU.

Workers decode a picture (upright, RGB: ``alexnet_zoo.data.images.read_image``), resize it to the
stored square (``alexnet_zoo.data.transforms.square_uint8``: the paper's short side 256 then the central
256x256, or BVLC's squash) and hand over uint8. Cropping, flipping, mean subtraction and colour
shifts happen on the batch (``augment.py``). With ``decode="device"`` the workers only read the file's bytes and
the JPEGs are decoded on the GPU in one batched nvJPEG call (``torchvision.io.decode_jpeg``).

An unreadable file (truncated, not a picture, gone) never stops a run: the worker hands over the
error instead of the picture, the collate drops it from its batch (nothing is substituted), and
the loop counts it, names it in a warning and lists it in ``failures.txt``.

Layouts: ``DIR/train`` and ``DIR/val`` as class folders (``ImageFolder``: class index = sorted
folder name, which for ImageNet's WNIDs is Caffe's and torchvision's order), or for ``val`` any
flat layout the evaluator reads (Caffe's ``val.txt``, a CSV, WNID-prefixed file names).
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.io import ImageReadMode

from alexnet_zoo.data.categories import WNID, imagenet_categories
from alexnet_zoo.data.datasets import find_labelled_images
from alexnet_zoo.data.images import IMAGE_SUFFIXES, check_image_bytes, read_image, read_image_bytes
from alexnet_zoo.data.transforms import ResizeMode, square_uint8
from alexnet_zoo.devices import non_blocking
from alexnet_zoo.errors import failure_message

__all__ = ["EpochSampler", "ImageFiles", "Picture", "PictureBatch", "ResizeMode", "ShardSampler", "SyntheticImages",
           "collate_pictures", "decode_batch", "folder_samples", "make_loader", "split_synthetic", "steps_per_epoch"]

WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


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
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def folder_samples(root: str | Path, class_to_idx: dict[str, int] | None = None
                   ) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, label) pairs and class names of a folder: class subfolders (``ImageFolder``: labels
    by sorted folder name, or by ``class_to_idx``, the training set's, for a validation set), or
    any flat layout the evaluator reads (``alexnet_zoo.data.datasets.find_labelled_images``: Caffe's
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
                                    f"({', '.join(sorted(IMAGE_SUFFIXES))})")
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
    if names == wnids or not all(WNID.fullmatch(name) for name in names):
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


class Picture(NamedTuple):
    """One item of :class:`ImageFiles`: ``image`` is the uint8 (3, S, S) square, or with ``raw`` a
    JPEG's encoded bytes (1-D) for the device to decode; None when the file cannot be read, and
    ``error`` then names the file and the reason."""

    image: Tensor | None
    label: int
    path: str
    error: str | None


def _device_decodable(data: bytes) -> bool:
    """Whether nvJPEG may decode these bytes to the pixels the CPU path gives: a complete JPEG
    (ending with the EOI marker: truncated files would come out half grey instead of failing), in
    YCbCr or grey (not CMYK), stored upright (torchvision's CUDA decoder ignores EXIF
    orientation). Reads only the headers."""
    if data[:2] != b"\xff\xd8" or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format == "JPEG" and img.mode in ("RGB", "L") and img.getexif().get(0x0112, 1) == 1
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse goes to the CPU path, which decides
        return False


class ImageFiles(Dataset):
    """(path, label) pairs -> :class:`Picture`: the uint8 (3, size, size) square, or with ``raw``
    the file's bytes, decoded later on the device (:func:`decode_batch`) when nvJPEG can give the
    CPU's pixels (:func:`_device_decodable`); any other file is decoded here, in the worker.

    An unreadable file does not raise: its Picture carries the error instead, so a worker (and
    the run) survives it and the collate sets it aside."""

    def __init__(self, samples: Sequence[tuple[Path, int]], size: int, mode: ResizeMode,
                 interpolation: str = "bilinear", raw: bool = False) -> None:
        self.samples = [(str(path), int(label)) for path, label in samples]  # light to send to workers
        self.size, self.mode, self.interpolation, self.raw = size, mode, interpolation, raw

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Picture:
        name, label = self.samples[index]
        try:
            if self.raw:
                data = read_image_bytes(name)  # within the file-size limit
                check_image_bytes(data, name)  # nvJPEG and decode_image have no pixel limit of their own
                if _device_decodable(data):
                    return Picture(torch.frombuffer(data, dtype=torch.uint8), label, name, None)
            return Picture(square_uint8(read_image(name), self.size, self.mode, self.interpolation), label, name, None)
        except Exception as err:  # noqa: BLE001 - read_image raises UnreadableImage for bad pictures; an
            # unreadable file (permissions, a vanished mount) or a Pillow quirk must not end the run either
            return Picture(None, label, name, failure_message(name, err))


@dataclass
class PictureBatch:
    """What a training loader yields: the readable pictures of a batch and the unreadable ones
    set aside as (path, error). ``images`` is a uint8 (N, 3, S, S) tensor, or with ``raw`` a list
    holding per picture its encoded bytes (1-D) or its decoded square (3-D). ``paths`` name the
    images (empty for synthetic pictures)."""

    images: Tensor | list[Tensor]
    labels: Tensor
    paths: list[str]
    failed: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.labels)

    def pin_memory(self) -> PictureBatch:
        """Called by a DataLoader with ``pin_memory=True`` (CUDA): page-locked, copied asynchronously."""
        images = [x.pin_memory() for x in self.images] if isinstance(self.images, list) else self.images.pin_memory()
        return PictureBatch(images, self.labels.pin_memory(), self.paths, self.failed)


def collate_pictures(items: Sequence[Picture | tuple[Tensor, int]], size: int, raw: bool = False) -> PictureBatch:
    """DataLoader ``collate_fn``: stack the readable pictures (keep them as a list when ``raw``:
    encoded files differ in length) and set the unreadable ones aside. Nothing is put in their
    place, so a batch may be short, or empty (a uint8 (0, 3, size, size) tensor); the loop still
    runs its step, which keeps every DDP process at the same step count."""
    pictures = [item if isinstance(item, Picture) else Picture(item[0], int(item[1]), "", None) for item in items]
    good = [p for p in pictures if p.image is not None]
    failed = [(p.path, p.error or f"{p.path}: unreadable") for p in pictures if p.image is None]
    labels = torch.tensor([p.label for p in good], dtype=torch.long)
    if raw:
        images: Tensor | list[Tensor] = [p.image for p in good]  # type: ignore[misc]
    elif good:
        images = torch.stack([p.image for p in good])  # type: ignore[misc]
    else:
        images = torch.empty((0, 3, size, size), dtype=torch.uint8)
    return PictureBatch(images, labels, [p.path for p in good], failed)


def decode_batch(files: Sequence[Tensor], size: int, mode: ResizeMode, device: torch.device,
                 interpolation: str = "bilinear", paths: Sequence[str] | None = None
                 ) -> tuple[Tensor, list[tuple[int, str]]]:
    """Encoded pictures (1-D; 3-D items are squares a worker decoded already) -> (uint8 (N, 3,
    size, size) on ``device`` of the decodable ones, [(index, error)] of the others).

    On CUDA the JPEGs go to nvJPEG in one batched call; if that call refuses the batch (one bad
    file fails it all), each file is tried alone. What nvJPEG refuses, and every file on other
    devices, is decoded by torchvision on the CPU, then by ``read_image`` (Pillow) from ``paths``;
    a file none of them reads is reported, not raised. EXIF orientation is applied on the CPU
    (the workers only send nvJPEG upright files); grey and CMYK become RGB."""
    out: list[Tensor | None] = [None] * len(files)
    failed: dict[int, str] = {}
    encoded = [i for i, data in enumerate(files) if data.dim() == 1]
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec as the successor of its decoders
        warnings.simplefilter("ignore", DeprecationWarning)
        if device.type == "cuda" and encoded:
            jpeg = [i for i in encoded if files[i][:2].tolist() == [0xFF, 0xD8]]
            try:
                decoded = torchvision.io.decode_jpeg([files[i] for i in jpeg], mode=ImageReadMode.RGB,
                                                     device=device) if jpeg else []
                for i, image in zip(jpeg, decoded):
                    out[i] = image
            except RuntimeError:
                for i in jpeg:
                    try:
                        out[i] = torchvision.io.decode_jpeg(files[i], mode=ImageReadMode.RGB, device=device)
                    except RuntimeError:
                        pass  # tried again below on the CPU
        for i, data in enumerate(files):
            if out[i] is not None:
                continue
            if data.dim() == 3:
                out[i] = data
                continue
            try:
                out[i] = torchvision.io.decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
            except RuntimeError as err:
                if not paths:
                    failed[i] = f"picture {i} of the batch cannot be decoded ({err})"
                    continue
                try:
                    out[i] = read_image(paths[i])
                except Exception as again:  # noqa: BLE001 - UnreadableImage, or a file gone since
                    failed[i] = failure_message(paths[i], again)
    squares = [square_uint8(image.to(device, non_blocking=non_blocking(device)), size, mode, interpolation)
               for image in out if image is not None]
    images = torch.stack(squares) if squares else torch.empty((0, 3, size, size), dtype=torch.uint8, device=device)
    return images, sorted(failed.items())


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
    keeps the loader from drawing on the global random state (which dropout uses). Batches are
    :class:`PictureBatch` es: unreadable files set aside, not raised.

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
                      drop_last=drop_last,
                      collate_fn=functools.partial(collate_pictures, size=getattr(dataset, "size", 0), raw=raw),
                      generator=torch.Generator().manual_seed(seed), **extra)


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Optimizer steps in one epoch (incomplete last batches are dropped)."""
    return num_samples // global_batch


def split_synthetic(num_samples: int, num_classes: int, size: int,
                    seed: int) -> tuple[SyntheticImages, SyntheticImages]:
    """A synthetic training set and a validation set of a quarter of its size (other pictures)."""
    return (SyntheticImages(num_samples, num_classes, size, seed),
            SyntheticImages(max(num_classes, math.ceil(num_samples / 4)), num_classes, size, seed + 1))

