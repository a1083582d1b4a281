"""Start-up time of ``from alexnet_zoo import alexnet`` and of a one-picture ``alexnet-zoo classify``, against
``import torch`` (``import alexnet_zoo`` alone imports nothing until a name is used).

A user who classifies one picture waits for the interpreter, torch, our imports, the weights and one
forward pass; everything but torch itself is ours to keep small. Each command runs in a fresh
interpreter, the four are interleaved round by round (a noisy neighbour hits all alike) and the
median round is reported, with the targets of issue 10: import <= 1.15x ``import torch``, classify
<= ``import torch`` + 1.5 s. The weights are a saved folder of random weights (no download).

    python benchmarks/startup.py --rounds 7 --json docs/startup.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "examples" / "chelsea.png"


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one run of ``command`` (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp, "weights")
        env["ALEXNET_ZOO_CACHE"] = str(Path(tmp, "cache"))
        subprocess.run([sys.executable, "-c", "import sys; from alexnet_zoo import alexnet, save_pretrained; "
                        "save_pretrained(alexnet(), sys.argv[1])", str(weights)], check=True, env=env)
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "import alexnet_zoo": [sys.executable, "-c", "import alexnet_zoo"],  # lazy: imports nothing yet
            "from alexnet_zoo import alexnet": [sys.executable, "-c", "from alexnet_zoo import alexnet"],
            "classify": [sys.executable, "-m", "alexnet_zoo.cli", "classify", str(PICTURE), "--pretrained", str(weights)],
        }
        timed(commands["classify"], env)  # builds the native kernels into the fresh cache: not start-up
        rounds: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(args.rounds):
            for name, command in commands.items():
                rounds[name].append(timed(command, env))
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.2f} s" for n, v in rounds.items()), flush=True)
    median = {name: statistics.median(v) for name, v in rounds.items()}
    torch_s = median["import torch"]
    report = {
        "seconds": median, "rounds": rounds,
        "import_ratio": median["from alexnet_zoo import alexnet"] / torch_s, "import_target": 1.15,
        "classify_over_torch_s": median["classify"] - torch_s, "classify_target_over_torch_s": 1.5,
        "python": sys.version.split()[0],
    }
    print(f"import torch {torch_s:.2f} s | import alexnet_zoo {median['import alexnet_zoo']:.2f} s | "
          f"from alexnet_zoo import alexnet {median['from alexnet_zoo import alexnet']:.2f} s "
          f"= {report['import_ratio']:.2f}x (target <= 1.15x) | classify {median['classify']:.2f} s "
          f"= torch + {report['classify_over_torch_s']:.2f} s (target <= + 1.5 s)")
    if args.json:
        from alexnet_zoo.paths import write_json

        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
