"""alexnet(pretrained=...) end to end: a local Hub serves an ONNX file in BVLC's layout, and the
real huggingface_hub client downloads it; it is verified, converted, cached as safetensors and
loaded, and must compute what onnxruntime computes on the same file."""

import dataclasses
import hashlib
import multiprocessing
import os

import pytest
import torch
from hub_server import Fault
from test_convert import bvlc_graph, rel_err, run_ort, weights  # noqa: F401 - the module-scoped fixture

from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo import convert as convert_module
from alexnet_zoo import weights as weights_module
from alexnet_zoo.cli import main
from alexnet_zoo.errors import ChecksumMismatch, NotCached
from alexnet_zoo.hub import FileSource

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
    from alexnet_zoo import weights as w
    from alexnet_zoo.hub import FileSource

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
    assert main(["weights", "download", "alexnet.bvlc_in1k"]) == 0
    capsys.readouterr()
    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alexnet.bvlc_in1k"]["cached"] is True
    example = Path(__file__).parents[1] / "examples" / "chelsea.png"
    assert main(["classify", str(example), "--pretrained", "alexnet.bvlc_in1k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    probs = [c["probability"] for c in out[0]["classes"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
