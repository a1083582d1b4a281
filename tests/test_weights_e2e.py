"""alexnet(pretrained=...) end to end: a local Hub serves an ONNX file in BVLC's layout, and the
real huggingface_hub client downloads it; it is verified, converted, cached as safetensors and
loaded, and must compute what onnxruntime computes on the same file."""

import dataclasses
import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from hub_server import ConnectionAttempts, Fault, closed_port
from test_convert import bvlc_graph, rel_err, run_ort, weights  # noqa: F401 - the module-scoped fixture

from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo.cli.main import main
from alexnet_zoo.errors import ChecksumMismatch, InvalidReference, NotCached
from alexnet_zoo.weights import convert as convert_module
from alexnet_zoo.weights import specs as weights_module
from alexnet_zoo.weights.sources import FileSource

REPO, FILE = "onnxmodelzoo/legacy_models", "validated/vision/classification/alexnet/model/bvlcalexnet-8.onnx"
pytest.importorskip("onnx")


def use_sources(monkeypatch, *sources: FileSource) -> None:
    """Point alexnet.bvlc_in1k at ``sources`` (the real spec pins the real 244 MB file)."""
    specs = tuple(dataclasses.replace(s, sources=sources) if s.name == "alexnet.bvlc_in1k" else s
                  for s in weights_module._SPECS)
    monkeypatch.setattr(weights_module, "_SPECS", specs)


def source(data: bytes, **kwargs) -> FileSource:
    fields = {"repo_id": REPO, "filename": FILE, "revision": "main"} | kwargs
    return FileSource(sha256=hashlib.sha256(data).hexdigest(), size=len(data), **fields)


@pytest.fixture
def bvlc(weights):
    graph = bvlc_graph(weights)
    return graph, graph.SerializeToString()


def test_pretrained_true_downloads_verifies_converts_and_matches_onnxruntime(hub_server, bvlc, monkeypatch):
    graph, data = bvlc
    hub_server.add_file(REPO, FILE, data)
    use_sources(monkeypatch, source(data))
    model = alexnet(pretrained=True).eval()
    assert model.config.lrn_convention == "caffe" and model.config.lrn_k == 1.0
    assert model.preprocessing.channel_order == "BGR" and model.preprocessing.crop == 227
    assert model.pretrained_cfg["weights"]["name"] == "alexnet.bvlc_in1k"
    x = torch.randn(2, 3, 227, 227) * 50
    with torch.inference_mode():
        ours = torch.softmax(model(x), -1).numpy()
    (prob,) = run_ort(graph, x)
    assert rel_err(ours, prob) <= 1e-4
    assert len(hub_server.gets()) == 1

    # later loads touch neither the network nor the converter
    before = len(hub_server.requests)
    monkeypatch.setattr(convert_module, "convert_file", lambda *a, **k: pytest.fail("converted twice"))
    again = alexnet(pretrained="bvlc_in1k").eval()
    assert len(hub_server.requests) == before
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    alexnet(pretrained=True)
    assert len(hub_server.requests) == before


def test_offline_without_cache_is_a_typed_error(hub_server, bvlc, monkeypatch):
    use_sources(monkeypatch, source(bvlc[1]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotCached, match=REPO):
        alexnet(pretrained=True)
    assert hub_server.requests == []


def test_a_dead_hub_falls_back_to_a_mirror_with_the_same_checksum(hub_server, bvlc, monkeypatch):
    data = bvlc[1]
    url, _ = hub_server.add_url("bvlcalexnet-8.onnx", data)
    use_sources(monkeypatch, source(data), source(data, repo_id="onnx/models", url=url))  # the Hub has no such file
    assert alexnet(pretrained=True).fc8.weight.shape == (1000, 4096)


def test_a_corrupt_download_is_refused_and_nothing_is_cached(hub_server, bvlc, monkeypatch):
    data = bvlc[1]
    hub_server.add_file(REPO, FILE, data, fault=Fault("corrupt"))
    use_sources(monkeypatch, source(data))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        alexnet(pretrained=True)
    cache = os.path.join(os.environ["ALEXNET_ZOO_CACHE"], "weights")
    assert not os.path.exists(cache) or not any(os.scandir(cache))
    hub_server.add_file(REPO, FILE, data)  # the Hub is mended: the next load succeeds
    alexnet(pretrained=True)


def _load_in_child(sha256: str, size: int, queue) -> None:
    import dataclasses

    from alexnet_zoo import alexnet
    from alexnet_zoo.weights import specs as w
    from alexnet_zoo.weights.sources import FileSource

    src = FileSource(REPO, FILE, "main", sha256, size)
    w._SPECS = tuple(dataclasses.replace(s, sources=(src,)) if s.name == "alexnet.bvlc_in1k" else s for s in w._SPECS)
    model = alexnet(pretrained=True)
    queue.put(float(model.fc7.weight.double().sum()))


def test_two_processes_loading_at_once_download_and_convert_once(hub_server, bvlc):
    data = bvlc[1]
    hub_server.add_file(REPO, FILE, data, delay=1.0)  # slow enough that both are inside at once
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    sha = hashlib.sha256(data).hexdigest()
    procs = [ctx.Process(target=_load_in_child, args=(sha, len(data), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    sums = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sums[0] == sums[1]
    assert len(hub_server.gets()) == 1
    assert len(os.listdir(os.path.join(os.environ["ALEXNET_ZOO_CACHE"], "weights"))) == 1


def test_hf_hub_repo_in_our_format(hub_server, tmp_path):
    model = alexnet(lrn_convention="caffe", lrn_k=1.0, num_classes=10).eval()
    save_pretrained(model, tmp_path)
    for name in ("model.safetensors", "config.json"):
        hub_server.add_file("someone/alexnet-flowers", name, (tmp_path / name).read_bytes(), lfs=name.endswith("tensors"))
    again = alexnet(pretrained="hf-hub:someone/alexnet-flowers").eval()
    assert again.config == model.config
    x = torch.randn(1, 3, 227, 227) * 50
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))


def test_cli_download_list_and_classify(hub_server, bvlc, monkeypatch, capsys):
    import json
    from pathlib import Path

    data = bvlc[1]
    hub_server.add_file(REPO, FILE, data)
    use_sources(monkeypatch, source(data))
    assert main(["weights", "download", "bvlc_in1k"]) == 0  # the short name the builders take works here too
    assert "bvlc_in1k: alexnet.bvlc_in1k ready" in capsys.readouterr().out
    assert main(["weights", "download", "bvlc"]) == 2
    assert "no pretrained weights named 'bvlc'; known names: alexnet.bvlc_in1k" in capsys.readouterr().err
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alexnet.bvlc_in1k"]["cached"] is True
    example = Path(__file__).parents[1] / "examples" / "chelsea.png"
    assert main(["classify", str(example), "--pretrained", "alexnet.bvlc_in1k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    probs = [c["probability"] for c in out[0]["classes"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def _publish_folder(hub_server, tmp_path, repo: str, fault: Fault | None = None):
    model = alexnet(num_classes=10).eval()
    save_pretrained(model, tmp_path)
    served = hub_server.add_file(repo, "model.safetensors", (tmp_path / "model.safetensors").read_bytes(), fault=fault)
    hub_server.add_file(repo, "config.json", (tmp_path / "config.json").read_bytes(), lfs=False)
    return model, served


def test_hf_hub_weights_are_checked_against_the_hubs_sha256(hub_server, tmp_path):
    _, served = _publish_folder(hub_server, tmp_path, "someone/tampered", Fault("corrupt"))
    with pytest.raises(ChecksumMismatch) as info:
        alexnet(pretrained="hf-hub:someone/tampered")
    message = str(info.value)
    assert "hf-hub:someone/tampered@main" in message and "'model.safetensors'" in message
    assert f"expected sha256 {served.sha256}, got " in message
    served.fault = None  # mended upstream: the refused copy was not kept, the next load downloads it and works
    assert alexnet(pretrained="hf-hub:someone/tampered").fc8.out_features == 10


@pytest.mark.parametrize("ref", ["hf-hub:someone/alexnet@../../../../escape", "hf-hub:../../escape/x",
                                 "hf-hub:someone/alexnet@%2e%2e%2f%2e%2e", "hf-hub:/etc/x", "hf-hub:someone/alexnet@"])
def test_hf_hub_references_are_validated_before_any_request(hub_server, tmp_path, ref):
    _publish_folder(hub_server, tmp_path / "src", "someone/alexnet")
    with pytest.raises(InvalidReference):
        alexnet(pretrained=ref)
    assert hub_server.requests == []
    assert not list(Path(os.environ["HF_HOME"]).parent.rglob("escape*"))


@pytest.mark.parametrize("host", ["dns", "refused"])
def test_offline_first_run_of_the_main_job_fails_at_once_and_says_what_to_do(hub_server, bvlc, monkeypatch, capsys,
                                                                             host):
    """``alexnet-zoo classify examples/chelsea.png`` with no way to the Hub: one attempt per source, then an
    error naming the file, its sha256 and the ways to bring it in."""
    port = closed_port()
    endpoint = "http://alexnet-zoo-offline.invalid" if host == "dns" else f"http://127.0.0.1:{port}"
    data = bvlc[1]
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    use_sources(monkeypatch, source(data), source(data, repo_id="onnx/models", url=f"{endpoint}/media/bvlc.onnx"))
    example = Path(__file__).parents[1] / "examples" / "chelsea.png"
    with ConnectionAttempts() as log:
        assert main(["classify", str(example)]) == 2
    tries = log.lookups("alexnet-zoo-offline.invalid") if host == "dns" else log.connects("127.0.0.1", port)
    assert tries == 2  # one per source: the Hub's retry ladder would make 6 for the first alone
    err = capsys.readouterr().err
    assert "bvlcalexnet-8.onnx" in err and hashlib.sha256(data).hexdigest() in err and "Traceback" not in err
    assert "alexnet-zoo weights convert bvlcalexnet-8.onnx --arch alexnet --out DIR" in err and "HF_ENDPOINT" in err
    assert "https://huggingface.co/onnxmodelzoo/legacy_models/resolve/main/" in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # said outright: no attempt at all, the same advice
    with ConnectionAttempts() as log:
        assert main(["classify", str(example)]) == 2
    assert log.events == [] and "weights convert" in capsys.readouterr().err


def _download_with_small_file_limit(sha256: str, size: int, limit: int, queue) -> None:
    """In a child: files may grow to ``limit`` bytes (RLIMIT_FSIZE); past that a write fails with EFBIG."""
    import dataclasses
    import io
    import resource
    import signal
    from contextlib import redirect_stderr

    from alexnet_zoo.cli.main import main
    from alexnet_zoo.weights import specs as w
    from alexnet_zoo.weights.sources import FileSource

    src = FileSource(REPO, FILE, "main", sha256, size)
    w._SPECS = tuple(dataclasses.replace(s, sources=(src,)) if s.name == "alexnet.bvlc_in1k" else s for s in w._SPECS)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["weights", "download", "bvlc_in1k"])
    queue.put((code, err.getvalue()))


def test_a_full_disk_while_the_converted_cache_is_written_is_a_clear_error(hub_server, bvlc, monkeypatch):
    data = bvlc[1]
    hub_server.add_file(REPO, FILE, data)
    use_sources(monkeypatch, source(data))
    from alexnet_zoo.weights.download import fetch

    fetch(weights_module.get_weight_spec("alexnet.bvlc_in1k").sources)  # the upstream file is in; conversion is next
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_download_with_small_file_limit,
                        args=(hashlib.sha256(data).hexdigest(), len(data), 1 << 20, queue))
    child.start()
    code, err = queue.get(timeout=240)
    child.join(timeout=60)
    cache = Path(os.environ["ALEXNET_ZOO_CACHE"], "weights")
    assert code == 2 and "Traceback" not in err, err
    assert f"could not write the converted alexnet.bvlc_in1k weights to the cache folder {cache}" in err
    assert "File too large" in err and "they need 243.9 MB" in err
    assert "free space or set ALEXNET_ZOO_CACHE" in err
    assert list(cache.iterdir()) == []  # nothing half-written, not even the temporary folder
    model = alexnet(pretrained=True)  # with room, the same cache works
    assert model.pretrained_cfg["weights"]["name"] == "alexnet.bvlc_in1k"
