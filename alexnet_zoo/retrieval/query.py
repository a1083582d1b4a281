"""Search by picture: the thin layer between an index folder (numpy / FAISS only) and the model.

It names the weights an extraction used so that a query can load the same bytes again
(:func:`weights_reference`), checks the weights an index folder names before loading them (the
folder is untrusted input: :func:`trusted_weights`), rebuilds the extractor an index was made with
(model, weights, layer, pooling) and searches by the vectors of query images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet_zoo.errors import IndexMismatch, InvalidReference
from alexnet_zoo.retrieval.features import FeatureExtractor, weights_label, weights_spec_name
from alexnet_zoo.retrieval.index import SearchHit, VectorIndex
from alexnet_zoo.retrieval.index_folder import INFO_FILE

__all__ = ["extractor_for", "index_device", "search_images", "trusted_weights", "weights_claim", "weights_reference"]


def weights_reference(pretrained: str, model: Any) -> str:
    """What to record as the weights: what was actually loaded. "random" for none; the absolute
    path of a local folder or file (whatever spec its config.json claims: a query must load these
    bytes, not download the spec's); an ``hf-hub:`` reference as given; else the spec name the
    loader resolved ("default", a tag or an arch name)."""
    if pretrained == "none":
        return "random"
    if pretrained.startswith("hf-hub:"):
        return pretrained
    if os.path.exists(pretrained):  # resolve() reads an existing path first, so this is what loaded
        return os.path.abspath(pretrained)
    label = weights_label(model)
    return label if label not in ("random", "local") else pretrained


def weights_claim(pretrained: str, model: Any) -> str | None:
    """The spec a local folder's or hub repo's config.json names, when that is not what
    :func:`weights_reference` records (information for people; never loaded from)."""
    name = weights_spec_name(model)
    return name if name and name != weights_reference(pretrained, model) else None


def trusted_weights(ref: Any, folder: str | os.PathLike | None) -> str:
    """The weights an index's info.json names, checked as untrusted input (anyone may have made
    the folder): a registered spec name or an ``hf-hub:`` reference, or local weights inside the
    index folder itself (a relative path is taken from it). Anything else is refused with the
    ``--pretrained`` to pass by a user who trusts it."""
    # weight loading: imported by a query, not by the CLI's parser
    from alexnet_zoo.weights.store import resolve_reference

    where = f"{Path(folder) / INFO_FILE}" if folder is not None else "the index's info.json"
    if ref is None or ref == "random":
        raise IndexMismatch("the index was built from randomly initialised weights, which cannot be rebuilt; "
                            "extract with --pretrained NAME|PATH (e.g. a folder saved with save_pretrained)")
    try:
        return str(resolve_reference(ref, trusted=False))
    except InvalidReference as err:
        if not isinstance(ref, str) or folder is None or not ref or "\0" in ref:
            raise InvalidReference(f"{where}: {err}") from None
        refused = err
    inside = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(inside, ref))  # an absolute ref stays itself
    if os.path.commonpath([inside, real]) != inside:
        raise InvalidReference(f"{where}: weights {ref!r} are a local path outside the index folder; an index folder "
                               "is untrusted input, so its info.json may only name a weight spec, an hf-hub: repo or "
                               f"weights inside the folder. If you trust it, pass --pretrained {ref}") from None
    try:
        return str(resolve_reference(real, allow_local=True))
    except InvalidReference:
        raise InvalidReference(f"{where}: {refused}") from None


def extractor_for(info: dict[str, Any], *, pretrained: str | None = None, device: str | None = None,
                  batch_size: int = 32, folder: str | os.PathLike | None = None) -> FeatureExtractor:
    """The extractor whose vectors match ``info`` (an index's or a features manifest's). The
    weights are ``pretrained`` when the caller names them, else the ones ``info`` names, checked
    by :func:`trusted_weights` (``folder``: where ``info`` came from)."""
    # weight loading: imported by a query, not by the CLI's parser
    from alexnet_zoo.factory import model_for_weights

    ref = pretrained if pretrained is not None else trusted_weights(info.get("weights"), folder)
    model = model_for_weights(ref, arch=info.get("model", "alexnet"))
    extractor = FeatureExtractor(model, info["layer"], pool=info.get("pool"), normalize=info.get("normalized", True),
                                 dtype=info.get("dtype", "float32"), device=device, batch_size=batch_size,
                                 weights=weights_reference(ref, model), precision=info.get("precision", "auto"))
    checked = ("model", "weights", "layer", "dim") if pretrained is not None else ("model", "layer", "dim")
    for key in checked:
        if key in info and extractor.info()[key] != info[key]:
            raise IndexMismatch(f"query features have {key}={extractor.info()[key]!r}, the index {key}={info[key]!r}")
    return extractor


def search_images(index: VectorIndex, extractor: FeatureExtractor, images: Sequence[Any], k: int = 10
                  ) -> list[list[SearchHit]]:
    """The k nearest indexed images of each query image (path, PIL image or tensor); a query whose
    vector is zero raises :class:`alexnet_zoo.errors.ZeroQuery` (its hits would be arbitrary)."""
    return index.search(extractor(list(images)), k)


def index_device(torch_device: str | None) -> str:
    """The index's device for a model's --device: cpu and mps keep the index on the CPU (faiss has
    no MPS form); cuda[:N] and none given let the index choose (the GPU where faiss sees one: a
    faiss-cpu build beside a CUDA torch still answers, on the CPU)."""
    if torch_device is None:
        return "auto"
    return "cpu" if str(torch_device).lower().startswith(("cpu", "mps")) else "auto"
