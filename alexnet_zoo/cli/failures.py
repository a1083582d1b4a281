"""How a command's failures reach its user: an expected error (a file missing, unreadable, unwritable
or not what was expected; a full disk; input our validation refuses) is one line on stderr naming the
file and what was expected, exit status 2; a bug keeps its traceback. Shared by ``alexnet-zoo`` and the
published benchmark recipes (``python -m alexnet_zoo.benchmarks.imagenet``).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence

from alexnet_zoo.errors import AlexNetZooError
from alexnet_zoo.paths import cache_root

__all__ = ["EXIT_ERROR", "EXIT_PARTIAL", "CommandError", "error_message", "report_errors"]

EXIT_PARTIAL, EXIT_ERROR = 1, 2  # 1: finished, some input files unreadable (listed); 2: an error stopped it


class CommandError(AlexNetZooError):
    """A failure the command line has already put into words (file and what was expected)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a user's input or machine causes: our error family (``AlexNetZooError``, this module's
    ``CommandError`` among them), the ``ValueError`` of argument validation, ``OSError`` (missing,
    unreadable or unwritable files, full disks) and safetensors' own error type."""
    from safetensors import SafetensorError  # a 0.1 s import, paid only when a command fails

    return AlexNetZooError, OSError, ValueError, SafetensorError


def _cache_hint() -> str:
    return f"the weights cache {cache_root()}"


def error_message(err: BaseException, writes: Sequence[str] = ()) -> str:
    """One line for an expected error: the file at fault first where the error knows it; for a
    write that failed without a name (a full disk), where this command writes (``writes``)."""
    if isinstance(err, OSError) and err.strerror:
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        reason = err.strerror
        if names:
            return f"{' -> '.join(names)}: {reason}"
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            where = ", ".join([*writes, _cache_hint()])
            return f"{reason} while writing (this command writes to {where}); free some space or write elsewhere"
        return reason
    if type(err).__name__ == "SafetensorError":
        where = ", ".join([*writes, _cache_hint()])
        return (f"a safetensors file could not be read or written ({err}); this command writes to {where}: "
                f"check free space and permissions")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def report_errors(prog: str, call: Callable[[], int], writes: Sequence[str] = ()) -> int:
    """``call()``'s exit status, or :data:`EXIT_ERROR` after one line ``PROG: error: ...`` on
    stderr for an expected error (see :func:`_expected_errors`); anything else propagates."""
    try:
        return call()
    except _expected_errors() as err:
        print(f"{prog}: error: {error_message(err, writes)}", file=sys.stderr)
        return EXIT_ERROR
