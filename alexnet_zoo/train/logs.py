"""Metrics of a run: ``metrics.jsonl`` (one object per logged step or evaluation), the same rows
as ``metrics.csv``, and TensorBoard when ``torch.utils.tensorboard`` imports.

Training rows carry ``event="train"``, step, epoch, loss, lr, top1/top5 of the batch and images/s;
evaluation rows ``event="val"`` with the validation loss, top1 and top5 (percent). On resume the
rows beyond the checkpoint's step are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]

_CSV_COLUMNS = ("event", "step", "epoch", "loss", "lr", "top1", "top5", "images_per_s")


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
                 tensorboard: bool = False) -> None:
        self.dir = Path(output_dir)
        self.jsonl, self.csv = self.dir / "metrics.jsonl", self.dir / "metrics.csv"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = read_metrics(self.jsonl) if resume_step is not None else []
        rows = [r for r in rows if r.get("step", 0) <= (resume_step or 0)]
        self._rewrite(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise RuntimeError("--tensorboard needs the tensorboard package (pip install tensorboard)") from err
            self.writer = SummaryWriter(str(self.dir / "tensorboard"), purge_step=resume_step)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        for target, text in ((self.jsonl, "".join(json.dumps(r) + "\n" for r in rows)),
                             (self.csv, self._csv_text(rows, header=True))):
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, target)

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
            for key in ("loss", "lr", "top1", "top5", "images_per_s"):
                if row.get(key) is not None:
                    self.writer.add_scalar(f"{prefix}/{key}", row[key], row["step"])

    def rows(self) -> list[dict[str, Any]]:
        return read_metrics(self.jsonl)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
