"""The record benchmarks/gpu_check.py keeps: one JSON rewritten atomically after every section (and
every measured row), so a run cut short by its time limit still says what it measured, and a log
of everything printed. Sections run under a time budget each; a row that no longer fits is recorded
as skipped with that reason, as is every part a machine cannot run (no CUDA, no faiss-gpu)."""

from __future__ import annotations

import contextlib
import datetime
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alexnet_zoo.paths import write_json

__all__ = ["Report", "Section"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Section:
    """One part of the check: its rows (measured, or ``{"name", "skipped": reason}``), extra facts,
    and the time it may still take (soft: a started row runs to its end)."""

    def __init__(self, report: Report, name: str, budget_s: float) -> None:
        self.report, self.name, self.budget_s = report, name, budget_s
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {"status": "running", "budget_s": budget_s, "started": _now(), "rows": []}

    def left(self) -> float:
        """Seconds left to this section (and never more than the run's own deadline leaves)."""
        return min(self.budget_s - (time.perf_counter() - self.start), self.report.left())

    def add(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        self.report.log(f"  [{self.name}] {shown}")
        self.report.save()

    def skip(self, name: str, reason: str) -> None:
        self.add({"name": name, "skipped": reason})

    def affordable(self, name: str) -> bool:
        """Whether row ``name`` may start: False (and the row recorded as skipped) once the budget is spent."""
        if self.left() > 0:
            return True
        self.skip(name, f"the {self.name} section's {self.budget_s:.0f} s budget (or the run's deadline) was spent")
        return False

    def set(self, **facts: Any) -> None:
        self.data.update(facts)
        self.report.save()


class Report:
    """The JSON (``path``) and the log beside it (``.log``); ``deadline_s`` bounds the whole run."""

    def __init__(self, path: Path, header: dict[str, Any], deadline_s: float) -> None:
        self.path, self.log_path = path, path.with_suffix(".log")
        self.deadline = time.perf_counter() + deadline_s
        self.data: dict[str, Any] = {**header, "started": _now(), "finished": None, "sections": {}}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("", encoding="utf-8")
        self.save()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def log(self, text: str) -> None:
        print(text, flush=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(text + "\n")

    def save(self) -> None:
        write_json(self.path, self.data)

    @contextlib.contextmanager
    def section(self, name: str, budget_s: float) -> Iterator[Section]:
        """Run a section: its status ends "done", "skipped" (it said why) or "error" (the exception
        and its traceback are recorded, and the next section still runs: one broken path must not
        cost the rest of a GPU's time)."""
        s = Section(self, name, budget_s)
        self.data["sections"][name] = s.data
        self.log(f"== {name} (budget {budget_s:.0f} s, {max(self.left(), 0):.0f} s left in the run)")
        try:
            yield s
            if s.data["status"] == "running":
                s.data["status"] = "done"
        except Exception as err:  # noqa: BLE001 - recorded in the JSON and the log, then the run goes on
            s.data.update(status="error", error=f"{type(err).__name__}: {err}",
                          traceback=traceback.format_exc().splitlines()[-12:])
            self.log(f"  [{name}] ERROR {type(err).__name__}: {err}\n" + traceback.format_exc())
        s.data["seconds"] = round(time.perf_counter() - s.start, 2)
        self.log(f"   {name}: {s.data['status']} in {s.data['seconds']:.1f} s")
        self.save()

    def finish(self) -> None:
        self.data["finished"] = _now()
        self.save()
