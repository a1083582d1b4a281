"""What every speed script records beside its timings: the machine (versions, CPU model, cores,
threads: ``alexnet_zoo.ops.capabilities.machine_facts``, as the evaluation recipe records it), the load
average when the run started (another job on the machine changes every figure), the GPU where one
is used, and the script's own settings.
"""

from __future__ import annotations

import os
from typing import Any

from alexnet_zoo.ops.capabilities import machine_facts

__all__ = ["environment"]


def environment(device: str = "cpu", **settings: Any) -> dict[str, Any]:
    """The machine's facts with ``device`` (and the GPU's name for a CUDA device), then ``settings``."""
    env: dict[str, Any] = {**machine_facts(device), **settings}
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not every OS has one
        pass
    return env
