"""Growing a features folder: which pictures of the source are new and which are gone since the
folder's last complete extraction, and folding an incremental run's shards into its manifest.

A picture is known by its path as the source lists it: a file rewritten under the same name keeps
its row (extract into a new folder to redo such files). An input listed as unreadable stays listed
while its path is in the source and is not retried; one gone from the source is dropped from the
failures, and a live row whose path is gone is recorded in ``removed`` (its vector stays in its
shard; :func:`alexnet_zoo.retrieval.shards.read_features` leaves it out). An incremental run keeps
its progress in its own manifests (``manifest-inc-00001.json``, under torchrun one a rank:
``manifest-inc-00001-rank-00000.json``) until :func:`fold_increment` writes ``failures.txt`` and
then ``manifest.json``, each atomically: a crash before leaves the old manifest, so a rerun finds
the same new pictures and resumes the run; a crash after leaves the grown one and nothing to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_zoo.errors import ExtractionMismatch
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.shards import (
    FAILURES,
    GROWN_VERSION,
    MANIFEST,
    join_ranks,
    read_manifest,
    read_paths,
    write_failures,
)

__all__ = ["Changes", "changes", "fold_increment", "part_manifest_name"]


@dataclass(frozen=True)
class Changes:
    """What a source holds that a complete features folder does not, and the reverse: ``new``
    (source paths with neither a row nor a failure, in the source's order), ``removed`` (``{row,
    path}`` of live rows whose path the source no longer lists) and ``failures`` (the folder's
    failures whose path it still lists)."""

    new: list[str]
    removed: list[dict[str, Any]]
    failures: list[dict[str, str]]

    def any(self, base: dict[str, Any]) -> bool:
        """Whether there is anything to extract or record."""
        return bool(self.new or self.removed or self.failures != base["failures"])


def changes(folder: str | os.PathLike, base: dict[str, Any], paths: list[str]) -> Changes:
    """The :class:`Changes` between the complete manifest ``base`` of ``folder`` and the source's
    ``paths`` (reads the shards' path files, not their vectors)."""
    stored = read_paths(folder, base)
    dead = {r["row"] for r in base.get("removed", [])}
    listed = set(paths)
    live = {p for i, p in enumerate(stored) if i not in dead}
    failed = {f["path"] for f in base["failures"]}
    return Changes(new=[p for p in paths if p not in live and p not in failed],
                   removed=[{"row": i, "path": p} for i, p in enumerate(stored) if i not in dead and p not in listed],
                   failures=[f for f in base["failures"] if f["path"] in listed])


def part_manifest_name(number: int, rank: int, world_size: int) -> str:
    """The manifest of incremental run ``number`` (of one rank under torchrun) until it is folded."""
    return f"manifest-inc-{number:05d}.json" if world_size == 1 else f"manifest-inc-{number:05d}-rank-{rank:05d}.json"


def _finished_part(folder: Path, number: int, world_size: int) -> dict[str, Any] | None:
    """Run ``number``'s manifest on ``world_size`` ranks, joined, when every rank has finished;
    else None. (Manifests an interrupted attempt on another number of ranks left are not read.)"""
    names = [part_manifest_name(number, rank, world_size) for rank in range(world_size)]
    if not all((folder / name).is_file() for name in names):
        return None
    parts = [read_manifest(folder, name) for name in names]
    if not all(p["complete"] for p in parts):
        return None
    return parts[0] if world_size == 1 else join_ranks(folder, parts)


def fold_increment(folder: str | os.PathLike, base: dict[str, Any], number: int, change: Changes,
                   world_size: int = 1) -> dict[str, Any] | None:
    """Append finished incremental run ``number`` on ``world_size`` ranks (its shards, failures and
    the ``change`` it was run for) to ``base``, write the grown manifest and failures.txt, and
    remove the run's own manifests; None (nothing written) while some rank has not finished."""
    folder = Path(folder)
    part = _finished_part(folder, number, world_size)
    if part is None:
        return None
    differing = [k for k in ("model", "weights", "layer", "pool", "normalized", "dtype", "precision", "dim",
                             "preprocessing") if part.get(k) != base.get(k)]
    if differing:
        raise ExtractionMismatch(f"{folder}: incremental run {number} has other {', '.join(differing)} than "
                                 f"{MANIFEST}; remove manifest-inc-{number:05d}*.json and rerun")
    grown = {**base, "version": GROWN_VERSION}
    grown.update(count=base["count"] + part["count"], shards=base["shards"] + part["shards"],
                 failures=change.failures + part["failures"], complete=True,
                 increments=[*base.get("increments", []),
                             {"inputs": part["inputs"], "inputs_sha256": part["inputs_sha256"],
                              "world_size": part["world_size"], "removed": len(change.removed)}],
                 removed=sorted(base.get("removed", []) + change.removed, key=lambda r: r["row"]))
    write_failures(folder / FAILURES, grown["failures"])
    write_json(folder / MANIFEST, grown)
    for name in folder.glob(f"manifest-inc-{number:05d}*.json"):
        name.unlink(missing_ok=True)
    return grown
