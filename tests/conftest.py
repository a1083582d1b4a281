import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/numpy_reference.py


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["native", "plain"])
def path(request, monkeypatch):
    """Run a test on the fast CPU paths (native LRN kernel, prepacked oneDNN) and on plain torch."""
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "1" if request.param == "native" else "0")
    return request.param


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Kernels build into a per-session cache, never the user's."""
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
