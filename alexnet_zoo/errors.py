"""The typed errors alexnet_zoo raises about weights and inputs, so callers can catch one family.

Every message names the thing at fault (repo and file, path, layer) and what was expected.
"""

from __future__ import annotations

__all__ = ["ChecksumMismatch", "ConversionError", "DownloadFailed", "InvalidConfig", "InvalidReference",
           "LabelFileError", "NotCached", "Unreachable", "UnknownWeights", "UnreadableImage", "WeightsError",
           "failure_message"]


class WeightsError(Exception):
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


class LabelFileError(ValueError):
    """A label file (Caffe ``val.txt``, CSV, synset list) is not what its format says; the message
    names the file, the line and what was expected."""


class UnreadableImage(ValueError):
    """An image file could not be decoded (missing, truncated, not an image)."""


def failure_message(path: str, err: BaseException) -> str:
    """What a batch job lists for a file it skipped: the error, naming the file (the messages of
    :class:`UnreadableImage` already do; anything else gets the path and the error type)."""
    text = str(err)
    return text if path in text else f"{path}: {type(err).__name__}: {text}"
