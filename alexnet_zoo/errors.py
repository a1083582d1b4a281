"""The typed errors alexnet_zoo raises about weights, inputs, features and indexes: one family under
:class:`AlexNetZooError`, so a caller (the command line among them) catches them all with one name.

Every message names the thing at fault (repo and file, path, layer) and what was expected. Errors that
are also about a bad value derive from ``ValueError`` too, as callers of earlier versions caught them.
Torch-free on purpose: the retrieval index imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlexNetZooError",
    "ChecksumMismatch",
    "ConversionError",
    "CorruptFeatures",
    "CorruptIndex",
    "DownloadFailed",
    "ExportError",
    "ExtractionMismatch",
    "GroundTruthError",
    "IndexMismatch",
    "InvalidConfig",
    "InvalidReference",
    "InvalidVectors",
    "LabelFileError",
    "NotCached",
    "RetrievalError",
    "UnknownWeights",
    "Unreachable",
    "UnreadableImage",
    "WeightsError",
    "ZeroQuery",
    "failure_message",
]


class AlexNetZooError(Exception):
    """Base of every error alexnet_zoo raises about what it was given (weights, files, settings)."""


# ---- weights ---------------------------------------------------------------------------------------

class WeightsError(AlexNetZooError):
    """Something about pretrained weights went wrong."""


class DownloadFailed(WeightsError):
    """No source of a weight file could be downloaded (HTTP error, dropped connection, ...)."""


class ChecksumMismatch(WeightsError):
    """A downloaded or cached file is not the one the spec pins (sha256 or size differ)."""


class NotCached(WeightsError):
    """Offline mode (``HF_HUB_OFFLINE=1``) and the weights are not in the cache."""


class Unreachable(DownloadFailed):
    """No source's host could be reached at all (name not resolved, connection refused): failed at once,
    without the client's retries, since retrying cannot help."""


class UnknownWeights(WeightsError, KeyError, ValueError):
    """A weight name that no spec has (a KeyError too, for callers that look names up; a ValueError
    for callers that passed it as ``pretrained=``)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class InvalidReference(WeightsError, ValueError):
    """A weights reference (``hf-hub:org/repo@rev``, a name from an untrusted file) that is malformed or not
    allowed; refused before any request or file access."""


class ConversionError(WeightsError, ValueError):
    """An upstream weight file does not hold what the converter expects (a layer, shape or
    attribute is missing or different)."""


class InvalidConfig(WeightsError, ValueError):
    """A ``config.json`` beside weights is unreadable or holds a field outside what the model
    accepts (wrong type, out of range, unknown); the message names the file and the field."""


# ---- inputs ----------------------------------------------------------------------------------------

class LabelFileError(AlexNetZooError, ValueError):
    """A label file (Caffe ``val.txt``, CSV, synset list) is not what its format says; the message
    names the file, the line and what was expected."""


class GroundTruthError(LabelFileError):
    """A retrieval benchmark's layout or ground truth (file names, ``gt_files``, a groups CSV) is not what
    the dataset's own format says; the message names the file, the line and what was expected."""


class UnreadableImage(AlexNetZooError, ValueError):
    """An image file could not be decoded (missing, truncated, not an image)."""



# ---- features and indexes --------------------------------------------------------------------------

class RetrievalError(AlexNetZooError, ValueError):
    """Something about extracted features or a vector index is not what was expected."""


class InvalidVectors(RetrievalError):
    """Vectors with NaN / inf, the wrong shape, or a count that does not match the paths."""


class ZeroQuery(InvalidVectors):
    """Cosine queries that are zero vectors: they have no direction, so every indexed vector is
    equally (un)similar and any ranking would be arbitrary. ``rows`` lists them."""

    def __init__(self, message: str, rows: Sequence[int]) -> None:
        super().__init__(message)
        self.rows = list(rows)


class IndexMismatch(RetrievalError):
    """The index folder holds vectors of another model, weights, layer or dimension than asked."""


class CorruptIndex(RetrievalError):
    """An index folder whose files are missing, unreadable or disagree with each other."""


class ExtractionMismatch(RetrievalError):
    """A features folder holds a job with other settings or inputs than the one asked for."""


class CorruptFeatures(ExtractionMismatch):
    """A features folder whose manifest or shard files are damaged, foreign or disagree."""


# ---- export ----------------------------------------------------------------------------------------

class ExportError(AlexNetZooError, ValueError):
    """A model or setting an export cannot write (an opset outside onnx's range, an input too small
    for the network, a model that is no AlexNet); the message says what was expected."""


# ---- reporting -------------------------------------------------------------------------------------

def failure_message(path: str, err: BaseException) -> str:
    """What a batch job lists for a file it skipped: the error, naming the file (the messages of
    :class:`UnreadableImage` already do; anything else gets the path and the error type)."""
    text = str(err)
    return text if path in text else f"{path}: {type(err).__name__}: {text}"
