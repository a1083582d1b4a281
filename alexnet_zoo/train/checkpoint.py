"""Resumable checkpoints, written so that a crash at any moment leaves the last good one intact.

A checkpoint is a folder ``checkpoints/step-000012345/`` with ``model.safetensors`` (the weights,
in the grouped model's names and layout, readable without pickle), ``state.pt`` (optimizer,
schedule, gradient scaler, step and epoch: plain tensors and numbers, loaded with
``torch.load(weights_only=True)``) and one ``rng-<rank>.pt`` per process. It is assembled in a
hidden ``.partial`` folder, renamed into place in one ``os.replace``, and only then named in
``checkpoints/latest``; older checkpoints beyond ``keep`` are removed after that.

The recipe writes an epoch's checkpoint as soon as its last batch is trained, before validation
(which can fail), and then only replaces its ``state.pt`` with the schedule's verdict
(:func:`update_training_state`).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from alexnet_zoo.paths import atomic_write
from alexnet_zoo.weights.config_file import WEIGHTS_FILE

__all__ = ["capture_rng", "find_checkpoint", "list_checkpoints", "load_training_checkpoint", "restore_rng",
           "save_training_checkpoint", "update_training_state"]

FORMAT = "alexnet_zoo-train-state"
VERSION = 1
_STATE, _LATEST = "state.pt", "latest"  # beside the model, saved as our folders hold it (WEIGHTS_FILE)


# ---- random states, as tensors and numbers (weights_only-compatible) --------------------------------

def capture_rng() -> dict[str, Any]:
    """This process's torch (CPU and every initialised CUDA device), numpy and Python states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None  # dropout on an Apple GPU
    return {"torch": torch.get_rng_state(), "cuda": cuda, "mps": mps,
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    if state.get("mps") is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))


# ---- save / find / load ---------------------------------------------------------------------------

def save_training_checkpoint(output_dir: str | Path, step: int, *, model_state: dict[str, Tensor],
                             train_state: dict[str, Any], rank: int = 0, keep: int = 3,
                             barrier: Callable[[], None] = lambda: None) -> Path:
    """Write checkpoint ``step`` (every rank calls this; rank 0 writes the shared files). Returns
    the folder. ``keep`` > 0 removes all but the newest ``keep`` checkpoints."""
    root = Path(output_dir) / "checkpoints"
    final, partial = root / f"step-{step:09d}", root / f".step-{step:09d}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    barrier()
    partial.mkdir(parents=True, exist_ok=True)  # output folders that are not shared between nodes
    rng = capture_rng()
    atomic_write(partial / f"rng-{rank}.pt", lambda tmp: torch.save(rng, tmp))
    barrier()
    if rank == 0:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        atomic_write(partial / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        state = {"format": FORMAT, "version": VERSION, "step": step, **train_state}
        atomic_write(partial / _STATE, lambda tmp: torch.save(state, tmp))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        atomic_write(root / _LATEST, lambda tmp: tmp.write_text(final.name + "\n"))
        if keep > 0:
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def update_training_state(folder: str | Path, train_state: dict[str, Any], *, rank: int = 0,
                          barrier: Callable[[], None] = lambda: None) -> Path:
    """Replace the training state of checkpoint ``folder`` (rank 0 writes; every rank calls).

    For what changes after an epoch's checkpoint without touching the weights, the optimizer or
    the random streams: the validation's verdict on the schedule, the epoch counter. ``state.pt``
    is replaced in one ``os.replace``: the folder holds the old state or the new one, never a
    mix, so a crash during this write still resumes from the epoch's checkpoint."""
    folder = Path(folder)
    if rank == 0:
        old = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
        state = {"format": FORMAT, "version": VERSION, "step": old["step"], **train_state}
        atomic_write(folder / _STATE, lambda tmp: torch.save(state, tmp))
    barrier()
    return folder


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [d for d in root.glob("step-*") if d.is_dir() and (d / WEIGHTS_FILE).is_file() and (d / _STATE).is_file()]
    return sorted(found, key=lambda d: d.name)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, or from a run's output folder (its latest checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS_FILE).is_file() and (path / _STATE).is_file():
        return path
    root = path / "checkpoints"
    latest = root / _LATEST
    if latest.is_file():
        named = root / latest.read_text().strip()
        if (named / _STATE).is_file():
            return named
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoint (expected {WEIGHTS_FILE} + {_STATE}, or checkpoints/step-*/ "
                                f"holding them)")
    return found[-1]


def load_training_checkpoint(path: str | Path, rank: int = 0
                             ) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any] | None]:
    """(weights, training state, this rank's random state or None) of a checkpoint folder."""
    folder = find_checkpoint(path)
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
        state = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch.load raise many types for damaged files
        raise ValueError(f"{folder}: not a readable training checkpoint ({err})") from err
    if state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"{folder / _STATE}: expected format {FORMAT} version {VERSION}, got "
                         f"{state.get('format')} {state.get('version')}")
    rng_file = folder / f"rng-{rank}.pt"
    rng = torch.load(rng_file, map_location="cpu", weights_only=True) if rng_file.is_file() else None
    return weights, state, rng
