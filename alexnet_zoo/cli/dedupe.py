"""The ``index dedupe`` command of ``alexnet-zoo``: near-duplicate pairs (the default, as before),
groups (``--groups``), or an evaluation of the pairs against labelled groups (``--labels``) that
finds the threshold reaching a precision.

Argument parsing and printing only: the pairs and groups are :mod:`alexnet_zoo.retrieval.index_dedupe`'s,
the metrics :mod:`alexnet_zoo.retrieval.dedupe_eval`'s, the pictures ``grids`` and ``pr_curve``'s.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from alexnet_zoo.cli.options import bounded_int
from alexnet_zoo.retrieval.dedupe_eval import label_ids, pair_curve, read_groups_csv
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_dedupe import GROUPINGS
from alexnet_zoo.retrieval.shards import printable

__all__ = ["add_dedupe_command", "cosine"]

GRID_GROUPS, GRID_MEMBERS, GRID_PAIRS = 20, 12, 50  # what --grid draws: the largest groups, or the best pairs


def cosine(text: str) -> float:
    """An argparse type: a near-duplicate threshold, a cosine in (0, 1] (at 0 or below nearly
    every pair of a collection qualifies)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a cosine in (0, 1], e.g. 0.95, got {text!r}")
    return value


def _fraction(low: float, what: str) -> Any:
    """An argparse type: a number from ``low`` to 1 (a threshold step, a target precision)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= 1:
            raise argparse.ArgumentTypeError(f"expected {what} from {low:g} to 1, got {text!r}")
        return value

    return parse


def _csv_out(header: list[str], rows: list[list[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def _pairs(args: argparse.Namespace, index: VectorIndex) -> None:
    pairs = index.duplicates(args.threshold, args.k, nprobe=args.nprobe)
    paths = index.paths
    if args.json:
        print(json.dumps([{"a": paths[i], "b": paths[j], "ids": [i, j], "score": s} for i, j, s in pairs], indent=2))
    elif args.csv:
        _csv_out(["a", "b", "id_a", "id_b", "score"], [[paths[i], paths[j], i, j, s] for i, j, s in pairs])
    else:
        for i, j, s in pairs:
            print(f"{s:.4f}  {printable(paths[i])}  {printable(paths[j])}")
        print(f"{len(pairs)} pairs at cosine >= {args.threshold}")
    if args.grid and pairs:
        # Pillow's drawing and fonts: only for --grid
        from alexnet_zoo.retrieval.grids import draw_grid

        draw_grid([[(paths[i], f"{i}"), (paths[j], f"{s:.4f}")] for i, j, s in pairs[:GRID_PAIRS]], args.grid,
                  size=args.thumb)


def _groups(args: argparse.Namespace, index: VectorIndex) -> None:
    groups = index.groups(args.threshold, args.k, grouping=args.groups, nprobe=args.nprobe)
    paths = index.paths
    if args.json:
        print(json.dumps([{"group": g, "size": len(members),
                           "members": [{"id": i, "path": paths[i], "best_score": s} for i, s in members]}
                          for g, members in enumerate(groups)], indent=2))
    elif args.csv:
        _csv_out(["group", "id", "path", "best_score"],
                 [[g, i, paths[i], s] for g, members in enumerate(groups) for i, s in members])
    else:
        for g, members in enumerate(groups):
            print(f"group {g}: {len(members)} pictures")
            for i, s in members:
                print(f"  {s:.4f}  {i:>8}  {printable(paths[i])}")
        print(f"{len(groups)} groups ({sum(map(len, groups))} pictures) at cosine >= {args.threshold}, "
              f"{args.groups}")
    if args.grid and groups:
        # Pillow's drawing and fonts: only for --grid
        from alexnet_zoo.retrieval.grids import draw_grid

        draw_grid([[(paths[i], f"{s:.4f}") for i, s in members[:GRID_MEMBERS]] for members in groups[:GRID_GROUPS]],
                  args.grid, size=args.thumb)


def _thresholds(low: float, step: float) -> list[float]:
    """``low``, ``low + step``, ... up to 1.0, rounded so that 0.9 + 0.01 prints as 0.91, 1.0 included."""
    count = math.floor((1.0 - low) / step + 1e-9)
    return sorted({round(low + n * step, 6) for n in range(count + 1)} | {1.0})


def _evaluate(args: argparse.Namespace, index: VectorIndex) -> int:
    labels = read_groups_csv(args.labels)
    groups = label_ids(labels, index.paths, args.labels)  # checked before the search, which takes the time
    curve = pair_curve(index.duplicates(args.threshold, args.k, nprobe=args.nprobe), groups)
    table = curve.table(_thresholds(args.threshold, args.step))
    target = None if args.target_precision is None else curve.lowest_threshold(args.target_precision)
    report = {"index": str(args.index), "labels": str(args.labels), "labelled": len(labels),
              "pictures": len(index.paths), "true_pairs": curve.positives, "table": table,
              "target_precision": args.target_precision, "threshold_for_target": target,
              "at_target": None if target is None else curve.at(target)}
    columns = ["threshold", "found", "true_found", "false_found", "missed", "precision", "recall", "f1"]
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.csv:
        _csv_out(columns, [["" if row[c] is None else row[c] for c in columns] for row in table])
    else:
        print("threshold   found    true   false  missed  precision  recall      f1")
        for r in table:
            rates = "  ".join("      -" if r[c] is None else f"{r[c]:7.4f}" for c in ("precision", "recall", "f1"))
            print(f"{r['threshold']:9.4f} {r['found']:7d} {r['true_found']:7d} {r['false_found']:7d} "
                  f"{r['missed']:7d}    {rates}")
        print(f"{curve.positives} true pairs among {len(labels)} labelled of {len(index.paths)} pictures")
        if target is not None:
            at = report["at_target"]
            print(f"lowest threshold with precision >= {args.target_precision}: {target:.6f} (precision "
                  f"{at['precision']:.4f}, recall {at['recall']:.4f}, {at['found']} pairs)")
    if args.curve:
        from alexnet_zoo.retrieval.pr_curve import draw_pr_curve  # Pillow: only for --curve

        draw_pr_curve(curve.points(), args.curve, title=f"{Path(args.index).name}: pairs vs {Path(args.labels).name}",
                      target=args.target_precision)
    if args.target_precision is not None and target is None:
        print(f"alexnet-zoo index dedupe: no threshold >= {args.threshold} reaches precision {args.target_precision} "
              "(lower --threshold, or the features cannot tell these duplicates apart)", file=sys.stderr)
        return 1
    return 0


def _dedupe(args: argparse.Namespace) -> int:
    if (args.target_precision is not None or args.curve) and not args.labels:
        raise ValueError("--target-precision and --curve evaluate against --labels GROUPS.csv; name one")
    if args.labels and args.grid:
        raise ValueError("--grid draws pairs or groups, not a --labels evaluation (that is --curve PNG)")
    index = VectorIndex.load(args.index, device=args.device)
    if args.labels:
        return _evaluate(args, index)
    (_groups if args.groups else _pairs)(args, index)
    return 0


def add_dedupe_command(isub: Any) -> None:
    """Register ``index dedupe`` on the ``index`` command's subparsers."""
    dedupe = isub.add_parser("dedupe", help="near-duplicate pairs, groups, or a calibration against labels",
                             epilog="exit status 1: --target-precision was reached at no threshold")
    dedupe.add_argument("index", type=Path)
    dedupe.add_argument("--threshold", type=cosine, default=0.95,
                        help="a cosine in (0, 1] (default 0.95); with --labels the lowest threshold evaluated")
    dedupe.add_argument("-k", type=bounded_int(1), default=10, help="HNSW indexes: neighbours checked per image")
    dedupe.add_argument("--nprobe", type=bounded_int(1), default=None,
                        help="IVF indexes: lists probed per image (default: the tuned search's; "
                        "near-copies need fewer)")
    dedupe.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    what = dedupe.add_mutually_exclusive_group()
    what.add_argument("--groups", nargs="?", const="connected", choices=GROUPINGS, default=None,
                      help="groups instead of pairs: connected (default: pictures a chain of pairs links) or "
                           "complete (each member at the threshold to every other)")
    what.add_argument("--labels", type=Path, default=None,
                      help="a path,group CSV (paths as the index stores them): pair precision / recall / F1 per "
                           "threshold from --threshold to 1")
    form = dedupe.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--csv", action="store_true", help="CSV on stdout (pairs, groups or the --labels table)")
    dedupe.add_argument("--step", type=_fraction(0.0001, "a threshold step"), default=0.01, help="--labels: threshold step of the table (0.01)")
    dedupe.add_argument("--target-precision", type=_fraction(0.0001, "a precision"), default=None, metavar="P",
                        help="--labels: the lowest threshold whose pair precision is P or more, e.g. 0.95")
    dedupe.add_argument("--curve", type=Path, default=None, help="--labels: the precision-recall curve to a PNG")
    dedupe.add_argument("--grid", type=Path, default=None,
                        help=f"draw the best {GRID_PAIRS} pairs, or with --groups the largest {GRID_GROUPS} groups, "
                             "to a PNG")
    dedupe.add_argument("--thumb", type=bounded_int(16, 1024), default=128, help="side of each picture in the grid, in pixels")
    dedupe.set_defaults(run=_dedupe)
