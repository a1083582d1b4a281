"""Metrics of a run: ``metrics.jsonl`` (one object per logged step or evaluation), the same rows
as ``metrics.csv``, and TensorBoard when ``torch.utils.tensorboard`` imports.

Training rows carry ``event="train"``, step, epoch, loss, lr, top1/top5 of the batch and images/s;
evaluation rows ``event="val"`` with the validation loss, top1 and top5 (percent); one
``event="epoch"`` row closes each epoch with its mean training loss over every picture and the
learning rate the schedule chose for the next step. On resume the rows beyond the checkpoint's
step are dropped, so the file reads as one uninterrupted run.
Training rows also carry ``skipped``: how many unreadable training pictures the run has skipped so
far; validation rows ``unreadable``: how many of the validation set's could not be read.

:class:`UnreadableFiles` lists the skipped files, one line per (split, file), in ``failures.txt``.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alexnet_zoo.paths import atomic_write

__all__ = ["FAILURES_FILE", "MetricsLog", "UnreadableFiles", "read_failures", "read_metrics"]

_CSV_COLUMNS = ("event", "step", "epoch", "loss", "lr", "top1", "top5", "images_per_s", "skipped", "unreadable")
FAILURES_FILE = "failures.txt"
_FAILURES_HEADER = "# pictures alexnet_zoo.train could not read and skipped: split<TAB>path<TAB>error\n"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (or of the one in a run folder)."""
    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines):
                    break  # a line cut short by a crash
                raise ValueError(f"{path}:{number}: not a JSON object ({err})") from err
    return rows


class MetricsLog:
    """Appends rows to the run's files (rank 0 only: other ranks get a log that writes nothing)."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = False, redo_epoch_end: bool = False) -> None:
        """``redo_epoch_end``: the checkpoint at ``resume_step`` was written before its epoch's
        validation, which the resumed run does again: that epoch's val and epoch rows go too."""
        self.dir = Path(output_dir)
        self.jsonl, self.csv = self.dir / "metrics.jsonl", self.dir / "metrics.csv"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.jsonl) if resume_step is not None else []
        at = resume_step or 0
        rows = [r for r in rows if r.get("step", 0) < at or r.get("step", 0) == at
                and not (redo_epoch_end and r.get("event") in ("val", "epoch"))]
        self._rewrite(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ImportError("--tensorboard needs the tensorboard package (pip install tensorboard)") from err
            # events from purge_step on are hidden: the checkpoint's own step stays unless it is redone
            purge = None if resume_step is None else resume_step + (0 if redo_epoch_end else 1)
            self.writer = SummaryWriter(str(self.dir / "tensorboard"), purge_step=purge)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        for target, text in ((self.jsonl, "".join(json.dumps(r) + "\n" for r in rows)),
                             (self.csv, self._csv_text(rows, header=True))):
            atomic_write(target, lambda tmp, text=text: tmp.write_text(text))

    @staticmethod
    def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, _CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        with self.csv.open("a") as f:
            f.write(self._csv_text([row], header=False))
        if self.writer is not None:
            prefix = row.get("event", "train")
            for key in ("loss", "lr", "top1", "top5", "images_per_s", "skipped", "unreadable"):
                if row.get(key) is not None:
                    self.writer.add_scalar(f"{prefix}/{key}", row[key], row["step"])

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics(self.jsonl)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---- unreadable pictures ---------------------------------------------------------------------------

def read_failures(path: str | Path) -> dict[tuple[str, str], str]:
    """{(split, path): error} of a ``failures.txt`` (or of the one in a run folder); {} when absent."""
    path = Path(path)
    path = path / FAILURES_FILE if path.is_dir() else path
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            split, name, error = (line.split("\t", 2) + ["", ""])[:3]
            out[(split, name)] = error
    return out


class UnreadableFiles:
    """The pictures a run skipped because they could not be read. Each process names a file in a
    warning the first time it meets it and counts every skip (a bad file is met again every
    epoch); :meth:`sync`, which every process calls at the same points (checkpoints, the end),
    gathers the new files on rank 0, which rewrites ``failures.txt`` atomically: a file listed
    there is never half-written, and a resumed run keeps the earlier entries."""

    def __init__(self, output_dir: str | Path, *, rank: int = 0, resume: bool = False) -> None:
        self.path = Path(output_dir) / FAILURES_FILE
        self.rank = rank
        self.known: dict[tuple[str, str], str] = read_failures(self.path) if resume and rank == 0 else {}
        self.new: dict[tuple[str, str], str] = {}
        self.counts = {"train": 0, "val": 0}  # skips met by this process (rank 0: plus the run's before a resume)

    def add(self, split: str, failed: Iterable[tuple[str, str]]) -> int:
        """Record the (path, error) pairs of one batch; returns how many there were."""
        n = 0
        for name, error in failed:
            n += 1
            key = (split, name)
            if key not in self.known:
                reason = error[len(name) + 2:] if error.startswith(f"{name}: ") else error  # named in its line
                reason = " ".join(reason.split())  # one line in failures.txt
                self.known[key] = self.new[key] = reason
                warnings.warn(f"skipped an unreadable {split} picture: {name}: {reason}", RuntimeWarning,
                              stacklevel=2)
        self.counts[split] = self.counts.get(split, 0) + n
        return n

    def sync(self, gather: Callable[[Any], list[Any]] = lambda obj: [obj]) -> None:
        """Collective: ``gather`` (``all_gather_object`` under DDP) brings every process's new
        files to rank 0, which rewrites the list when it grew."""
        gathered = gather(self.new)
        self.new = {}
        if self.rank != 0 or not any(gathered):
            return
        for part in gathered:
            for key, reason in part.items():
                self.known.setdefault(key, reason)
        self.write()

    def write(self) -> None:
        """Rewrite ``failures.txt`` (rank 0): one ``split<TAB>path<TAB>error`` line per file, sorted."""
        lines = "".join(f"{split}\t{name}\t{reason}\n" for (split, name), reason in sorted(self.known.items()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: tmp.write_text(_FAILURES_HEADER + lines, encoding="utf-8"))
