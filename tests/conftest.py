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


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A local Hub (tests/hub_server.py) that huggingface_hub talks to instead of huggingface.co, with a
    private Hub cache and alexnet_zoo cache. huggingface_hub reads its environment once, at import, into
    ``huggingface_hub.constants``: the variables are set for code that reads them at call time (and for
    spawned processes) and the constants are patched so the client itself can never reach the real Hub.
    Telemetry is off: otherwise the first request of a process also fetches ``/api/agent-harnesses``. Xet is off:
    with hf_xet installed the client would upload through Xet storage, which the server does not speak; without it
    uploads take the LFS batch API (see tests/hub_server.py)."""
    import time
    import types

    import huggingface_hub.constants as hf_constants
    import huggingface_hub.file_download as hf_file_download
    import huggingface_hub.utils._http as hf_http
    from hub_server import HubServer

    server = HubServer().start()
    hf_home = tmp_path / "hf_home"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE",
                 "HUGGINGFACE_HUB_CACHE", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    env = {"HF_ENDPOINT": server.url, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "ALEXNET_ZOO_CACHE": str(tmp_path / "zoo_cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    patched = {"ENDPOINT": server.url, "HUGGINGFACE_CO_URL_TEMPLATE": template, "HF_HOME": str(hf_home),
               "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True,
               "HF_TOKEN_PATH": str(hf_home / "token"), "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
               "HF_XET_CACHE": str(hf_home / "xet"), "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
               "HF_HUB_DISABLE_XET": True}
    for name, value in patched.items():
        monkeypatch.setattr(hf_constants, name, value)
    # The client backs off 1, 2, 4, 8 s between retries (HTTP 5xx, dropped connections): no real sleeping here.
    fast_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    fast_time.sleep = lambda seconds: None
    monkeypatch.setattr(hf_http, "time", fast_time)
    monkeypatch.setattr(hf_file_download, "time", fast_time)
    hf_http.close_session()  # no pooled connection to an earlier test's server
    yield server
    hf_http.close_session()
    server.stop()
