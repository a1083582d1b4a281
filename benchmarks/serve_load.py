"""`alexnet-zoo serve` under load: N concurrent clients against a running server.

An index of ``--count`` vectors (conv5, average-pooled over space: 256-d, the served features'
dimension, so picture queries search it for real) is built once into ``--workdir`` from the
clustered mixture of ``benchmarks/retrieval.py``, its paths cycling over a few generated pictures;
then the server is started as a user starts it (``alexnet-zoo serve``, its own process, local
random weights) and ``--clients`` asyncio clients (keep-alive HTTP/1.1 on asyncio streams) send
``--requests`` id queries (``GET /api/neighbours/ID``)
and then ``--picture-requests`` picture queries (``POST /api/search``, raw bodies). Reported:
requests/s, p50 / p99 latency, errors, the server's resident memory before and after each phase,
and the model-bound rate (pictures/s of the same extractor, precision and batch size, measured in
this process before the server starts) that picture-query throughput is compared with; the
server's CPU time per id query (its own cost, steadier than latency on a shared machine);
``--memory-run N`` more picture queries with the RSS read every ``--memory-step`` (does growth
level off?); ``--baseline DIR`` (a source tree of another version, e.g. ``git worktree add DIR
COMMIT``) id queries against that version's server and this one's, alternately, ``--rounds`` times,
with this one's ratio to it.

    PYTHONPATH=. python benchmarks/serve_load.py --count 1000000 --clients 8 --json docs/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from _environment import environment  # benchmarks/_environment.py, beside this script
from PIL import Image, ImageDraw
from retrieval import mixture  # benchmarks/retrieval.py, beside this script

from alexnet_zoo import alexnet
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index import VectorIndex

__all__ = ["main"]


def _pictures(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, 280)), int(rng.integers(0, 200))
            draw.ellipse([x, y, x + int(rng.integers(20, 120)), y + int(rng.integers(20, 120))],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        path = folder / f"p{i:03d}.jpg"
        img.save(path, quality=90)
        out.append(path)
    return out


def _build(work: Path, count: int, kind: str, memory: str) -> tuple[Path, Path, list[Path]]:
    """(index folder, weights folder, pictures), made once per (count, kind) and reused."""
    from alexnet_zoo.weights.store import save_pretrained

    weights, pictures = work / "weights", _pictures(work / "pictures", 32)
    if not (weights / "config.json").exists():
        torch.manual_seed(0)
        save_pretrained(alexnet(), weights)
    folder = work / f"index-{count}-{kind}"
    if not (folder / "info.json").exists():
        extractor = FeatureExtractor(alexnet(pretrained=weights), "conv5", device="cpu", weights=str(weights))
        x = mixture(count, extractor.dim)
        x[: len(pictures)] = extractor(pictures)  # the pictures' own vectors: their queries find them
        paths = [str(pictures[i % len(pictures)]) for i in range(count)]
        print(f"building a {kind} index of {count:,} vectors ...", file=sys.stderr, flush=True)
        VectorIndex.build(x, paths, kind=kind, memory=memory, meta=extractor.info()).save(folder)
    return folder, weights, pictures


def _model_bound(folder: Path, weights: Path, pictures: list[Path], precision: str, batch: int,
                 seconds: float = 10.0) -> float:
    """Pictures/s of the served extractor on full batches of preprocessed pictures (no HTTP, no decoding)."""
    from alexnet_zoo.retrieval.query import extractor_for

    info = json.loads((folder / "info.json").read_text())
    extractor = extractor_for({**info, "precision": precision}, pretrained=str(weights), device="cpu")
    stacked = torch.stack([extractor.prepare(Image.open(pictures[i % len(pictures)]).convert("RGB"))
                           for i in range(batch)])
    extractor.embed_batch(stacked)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        extractor.embed_batch(stacked)
        done += batch
    return done / (time.perf_counter() - start)


def _rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Connection:
    """One keep-alive HTTP/1.1 connection of one client: a request written whole, its response read
    by Content-Length (the server's JSON always has one). Written here rather than httpx because
    the clients share the server's two cores: httpx spent about 1.7 ms of CPU a request, more than
    the server itself, and what the load generator burns is taken from the server it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, target: str, body: bytes = b"", content_type: str = "") -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        writer.write((head + (f"Content-Type: {content_type}\r\n" if content_type else "") + "\r\n").encode()
                     + body)
        try:
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            data = await reader.readexactly(int(headers["content-length"]))
        except (asyncio.IncompleteReadError, KeyError, ValueError):
            await self.close()
            raise
        if headers.get("connection") == "close":
            await self.close()
        return int(lines[0].split()[1]), data

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _load(url: str, clients: int, requests: int, make: Any) -> dict[str, Any]:
    """``requests`` requests from ``clients`` concurrent clients, each on its own connection;
    ``make(i)`` is request i as (method, target, body, content type). A 200 must be JSON with results."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def client_loop() -> None:
        connection = _Connection(host, int(port))
        for i in counter:
            start = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(connection.request(*make(i)), 120)
                if status != 200 or "results" not in json.loads(body):
                    errors.append(f"{status} {body[:200]!r}")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, KeyError, ValueError) as err:
                errors.append(repr(err))
                await connection.close()
            latencies.append(time.perf_counter() - start)
        await connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": requests, "clients": clients, "seconds": round(elapsed, 2),
            "requests_per_second": round(requests / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "errors": len(errors), "first_errors": errors[:5]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc): the server's own cost,
    which the machine's other load does not change the way it changes latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_stack() -> dict[str, str | None]:
    """Versions of what uvicorn serves with here (it uses httptools and uvloop when installed)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    return {name: of(name) for name in ("uvicorn", "fastapi", "httptools", "uvloop")}


def _start(folder: Path, weights: Path, precision: str, batch: int, source: Path | None = None
           ) -> tuple[subprocess.Popen, str]:
    """The server as a user starts it; ``source``: run the alexnet_zoo of that source tree instead."""
    port = _free_port()
    env = dict(os.environ)
    if source is not None:  # and run there: `python -m` puts the working folder before PYTHONPATH
        env["PYTHONPATH"] = os.pathsep.join([str(source.resolve()), env.get("PYTHONPATH", "")])
    if source is not None:
        where = subprocess.run([sys.executable, "-c", "import alexnet_zoo; print(alexnet_zoo.__file__)"], env=env,
                               cwd=source.resolve(), capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(source.resolve()):
            raise SystemExit(f"--baseline {source}: its server would import alexnet_zoo from {where}")
    process = subprocess.Popen([sys.executable, "-m", "alexnet_zoo.cli", "serve", str(folder.resolve()), "--port",
                                str(port), "--pretrained", str(weights.resolve()), "--precision", precision,
                                "--device", "cpu", "--max-batch", str(batch)], env=env,
                               cwd=None if source is None else source.resolve())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not answer within 600 s")


def _id_queries(url: str, pid: int, clients: int, requests: int, count: int) -> dict[str, Any]:
    """``requests`` id queries (random ids, k=10), with the server's CPU time a request."""
    rng = random.Random(0)
    ids = [rng.randrange(count) for _ in range(requests)]
    before = _cpu_seconds(pid)
    out = asyncio.run(_load(url, clients, requests, lambda i: ("GET", f"/api/neighbours/{ids[i]}?k=10", b"", "")))
    return {**out, "server_cpu_ms_per_request": round(1000 * (_cpu_seconds(pid) - before) / requests, 3)}


def _compare(folder: Path, weights: Path, args: argparse.Namespace, count: int) -> dict[str, Any]:
    """``--baseline``: id queries against a server of that source tree and one of this, alternately,
    ``--rounds`` times (the machine's load drifts: alternating spreads it over both), each round
    warmed up; medians, their spread, and this version's ratio to the baseline."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    for _ in range(args.rounds):
        for name, source in (("baseline", args.baseline), ("this", None)):
            process, url = _start(folder, weights, args.precision, args.max_batch, source)
            try:
                _id_queries(url, process.pid, args.clients, 200, count)
                runs[name].append(_id_queries(url, process.pid, args.clients, args.compare_requests, count))
            finally:
                process.terminate()
                process.wait(60)
    keys = ("server_cpu_ms_per_request", "p50_ms", "p99_ms", "requests_per_second")
    summary = {name: {key: {"median": float(np.median([r[key] for r in rs])),
                            "min": min(r[key] for r in rs), "max": max(r[key] for r in rs)} for key in keys}
               for name, rs in runs.items()}
    return {"baseline_source": str(args.baseline), "requests_a_round": args.compare_requests, "rounds": runs,
            "summary": summary, "this_vs_baseline": {key: round(summary["this"][key]["median"]
                                                                / summary["baseline"][key]["median"], 3)
                                                     for key in keys}}


def _phases(url: str, pid: int, args: argparse.Namespace, count: int, pictures: list[bytes]) -> dict[str, Any]:
    def by_id(i: int) -> tuple[str, str, bytes, str]:
        return "GET", f"/api/neighbours/{i % count}?k=10", b"", ""

    def by_picture(i: int) -> tuple[str, str, bytes, str]:
        return "POST", "/api/search?k=10", pictures[i % len(pictures)], "image/jpeg"

    out: dict[str, Any] = {}
    asyncio.run(_load(url, args.clients, min(200, args.requests), by_id))  # warm-up: connections, caches
    asyncio.run(_load(url, args.clients, min(4 * args.max_batch, args.picture_requests), by_picture))
    out["rss_before_bytes"] = _rss(pid)
    out["id_queries"] = _id_queries(url, pid, args.clients, args.requests, count)
    out["rss_after_id_queries_bytes"] = _rss(pid)
    out["picture_queries"] = asyncio.run(_load(url, args.clients, args.picture_requests, by_picture))
    out["rss_after_picture_queries_bytes"] = _rss(pid)
    if args.memory_run:  # does the picture phase's growth level off? RSS after every --memory-step more
        curve, done = [], 0
        while done < args.memory_run:
            step = min(args.memory_step, args.memory_run - done)
            errors = asyncio.run(_load(url, args.clients, step, by_picture))["errors"]
            done += step
            curve.append({"picture_queries": done, "rss_bytes": _rss(pid), "errors": errors})
        out["memory_run"] = curve
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--kind", default="auto", choices=("auto", "exact", "ivfpq", "hnsw"))
    parser.add_argument("--memory", default="4GB", help="the index's memory budget (as for index build)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10_000, help="id queries")
    parser.add_argument("--picture-requests", type=int, default=2_000, help="picture queries")
    parser.add_argument("--memory-run", type=int, default=0,
                        help="picture queries after the timed phases, the server's RSS read every --memory-step")
    parser.add_argument("--memory-step", type=int, default=500)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a source tree of another version (git worktree add DIR COMMIT) to compare id "
                             "queries with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the --baseline comparison")
    parser.add_argument("--compare-requests", type=int, default=3000, help="id queries a round of the comparison")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "serve_load")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    folder, weights, pictures = _build(args.workdir, args.count, args.kind, args.memory)
    bound = _model_bound(folder, weights, pictures, args.precision, args.max_batch)
    info = json.loads((folder / "info.json").read_text())
    compared = _compare(folder, weights, args, info["count"]) if args.baseline is not None else None
    process, url = _start(folder, weights, args.precision, args.max_batch)
    try:
        phases = _phases(url, process.pid, args, info["count"], [p.read_bytes() for p in pictures])
    finally:
        process.terminate()
        process.wait(60)
    pictures_rate = phases["picture_queries"]["requests_per_second"]
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": environment("cpu", **{k: str(v) for k, v in vars(args).items()}),
              "server_stack": _server_stack(),
              "index": {k: info[k] for k in ("count", "dim", "factory", "kind", "recall_at_10", "bytes_per_vector")},
              "model_bound_pictures_per_second": round(bound, 1), **phases,
              "picture_throughput_vs_model_bound": round(pictures_rate / bound, 3),
              "memory_growth_bytes": phases["rss_after_picture_queries_bytes"] - phases["rss_before_bytes"],
              **({"compared_with_baseline": compared} if compared else {})}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
