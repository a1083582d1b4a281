"""Export: the ONNX graph run by onnxruntime and the traced TorchScript program equal the model
(relative error <= 1e-4 at fc8, batch 1 and 5, inputs 227 and 224, both LRN conventions, ours and
owt), their metadata reads back, and ``alexnet-zoo export`` writes both from a saved folder.

The weights are random but scaled layer by layer so every layer's activations have a realistic
spread (conv outputs of tens, logits of tens: BVLC's range), so LRN's denominator and the
classifier are exercised for real rather than near zero; errors are relative to the largest
reference logit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alexnet_zoo import alexnet, alexnet_owt, save_pretrained
from alexnet_zoo.cli.main import main
from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING
from alexnet_zoo.deploy.metadata import METADATA_KEYS, export_metadata, parse_metadata
from alexnet_zoo.deploy.onnx_graph import build_onnx, export_onnx
from alexnet_zoo.deploy.torchscript import METADATA_FILE, export_torchscript
from alexnet_zoo.errors import ExportError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

TOLERANCE = 1e-4
_TARGET_STD = {"conv": 40.0, "fc6": 8.0, "fc7": 8.0, "fc8": 10.0}  # per layer, before ReLU


def _realistic(model):
    """Rescale each layer (in order) so its pre-activation spread is _TARGET_STD on picture-like input."""
    x = torch.randn(4, 3, 227, 227) * 60
    with torch.no_grad():
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            std = model.extract(x, [name], relu=False)[name].std()
            factor = _TARGET_STD.get(name, _TARGET_STD["conv"]) / std
            layer = getattr(model, name)
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)
    return model.eval()


MODELS = {
    "paper": lambda: alexnet(),
    "caffe": lambda: alexnet(lrn_convention="caffe", lrn_k=1.0),
    "owt": lambda: alexnet_owt(),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    return _realistic(MODELS[request.param]())


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, side, side, generator=gen) * 60 for n, side in ((1, 227), (5, 224), (5, 227), (1, 224))]


def _relative_error(got, ref: torch.Tensor) -> float:
    got = torch.as_tensor(np.asarray(got))
    return float((got - ref).abs().max() / ref.abs().max())


def _session(path_or_bytes):
    source = str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def test_onnx_equals_the_model(model, tmp_path):
    path = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Conv", "Relu", "LRN", "MaxPool", "Flatten", "Gemm"}
    assert ("LRN" in ops) == model.config.lrn
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in proto.graph.node}
    assert [attrs[f"conv{i}"]["group"] for i in range(1, 6)] == list(model.config.groups)
    assert attrs["pool1"]["ceil_mode"] == int(model.config.pool_ceil)
    if model.config.lrn:
        c = model.config
        expected_alpha = c.lrn_alpha * c.lrn_size if c.lrn_convention == "paper" else c.lrn_alpha
        assert attrs["norm1"]["alpha"] == pytest.approx(expected_alpha) and attrs["norm1"]["bias"] == c.lrn_k
    session = _session(path)
    for x in _inputs():
        with torch.no_grad():
            ref = model(x)
        assert ref.abs().max() > 5  # logits of a realistic size
        (got,) = session.run(None, {"images": x.numpy()})
        assert got.shape == ref.shape
        assert _relative_error(got, ref) <= TOLERANCE, (tuple(x.shape), _relative_error(got, ref))
    assert parse_metadata({p.key: p.value for p in proto.metadata_props}) == parse_metadata(export_metadata(model))


def test_torchscript_equals_the_model(model, tmp_path):
    path = export_torchscript(model, tmp_path / "m.pt")
    extra = {METADATA_FILE: ""}
    program = torch.jit.load(str(path), _extra_files=extra)
    graph = str(program.inlined_graph)
    assert "mkldnn" not in graph and "PythonOp" not in graph  # no CPU fast path recorded
    for x in _inputs():
        with torch.no_grad():
            ref, got = model(x), program(x)
        assert _relative_error(got, ref) <= TOLERANCE, (tuple(x.shape), _relative_error(got, ref))
    assert json.loads(extra[METADATA_FILE]) == export_metadata(model)


def test_lrn_alpha_conversion_matters():
    """The paper's alpha exported unconverted (as if ONNX's LRN took the raw sum) misses by far
    more than the tolerance at these activations: the parity above tests the conversion."""
    torch.manual_seed(0)
    model = _realistic(alexnet())
    proto = build_onnx(model)
    for node in proto.graph.node:
        if node.op_type == "LRN":
            next(a for a in node.attribute if a.name == "alpha").f = model.config.lrn_alpha
    x = _inputs()[0]
    with torch.no_grad():
        ref = model(x)
    (got,) = _session(proto.SerializeToString()).run(None, {"images": x.numpy()})
    assert _relative_error(got, ref) > 100 * TOLERANCE


def test_fixed_input_size_adapts_pool5(tmp_path):
    """--input-size 256 for owt: pool5 is 7x7 and both exports average it to 6x6 as the model does."""
    torch.manual_seed(0)
    model = _realistic(alexnet_owt())
    onnx_path = export_onnx(model, tmp_path / "owt256.onnx", input_size=256, dynamic_batch=False)
    ts_path = export_torchscript(model, tmp_path / "owt256.pt", input_size=256)
    x = torch.randn(1, 3, 256, 256) * 60
    with torch.no_grad():
        ref = model(x)
        traced = torch.jit.load(str(ts_path))(x)
    (got,) = _session(onnx_path).run(None, {"images": x.numpy()})
    assert _relative_error(got, ref) <= TOLERANCE and _relative_error(traced, ref) <= TOLERANCE
    proto = onnx.load(str(onnx_path), load_external_data=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 256, 256]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["input_sides"]) == [256]


def test_a_model_without_classifier_exports_its_fc7(tmp_path):
    torch.manual_seed(0)
    model = alexnet(num_classes=0, hidden=64).eval()
    x = torch.randn(3, 3, 227, 227) * 60
    with torch.no_grad():
        ref = model(x)
    session = _session(export_onnx(model, tmp_path / "fc7.onnx"))
    assert [o.name for o in session.get_outputs()] == ["features"]
    assert _relative_error(session.run(None, {"images": x.numpy()})[0], ref) <= TOLERANCE
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map)
    assert meta["num_classes"] == 0 and meta["labels"] == [] and "fc7" in meta["output"]


def test_export_refuses_bad_settings(tmp_path):
    model = alexnet()
    with pytest.raises(ExportError, match="opset 7"):
        export_onnx(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ExportError, match="input size 40"):
        export_torchscript(model, tmp_path / "m.pt", input_size=40)
    with pytest.raises(ExportError, match="expected an alexnet_zoo AlexNet"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_exports_a_saved_folder(tmp_path, capsys):
    torch.manual_seed(0)
    model = _realistic(alexnet())
    folder = save_pretrained(model, tmp_path / "weights", preprocessing=BVLC_PREPROCESSING)
    x = torch.randn(2, 3, 227, 227) * 60
    with torch.no_grad():
        ref = model(x)
    onnx_path, ts_path = tmp_path / "out" / "alexnet.onnx", tmp_path / "out" / "alexnet.pt"
    assert main(["export", "--pretrained", str(folder), "--format", "onnx", "--out", str(onnx_path),
                 "--opset", "17"]) == 0
    assert main(["export", "--pretrained", str(folder), "--format", "torchscript", "--out", str(ts_path)]) == 0
    assert str(onnx_path) in capsys.readouterr().out
    proto = onnx.load(str(onnx_path))
    assert proto.opset_import[0].version == 17
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props})
    assert set(meta) == set(METADATA_KEYS)
    assert meta["arch"] == "alexnet" and meta["weights"] == str(folder) and meta["num_classes"] == 1000
    assert meta["preprocessing"] == BVLC_PREPROCESSING.to_dict()
    assert meta["labels"] == [c.name for c in imagenet_categories()] and meta["wnids"][0] == "n01440764"
    assert 199 in meta["input_sides"] and 230 in meta["input_sides"] and 231 not in meta["input_sides"]
    (got,) = _session(onnx_path).run(None, {"images": x.numpy()})
    assert _relative_error(got, ref) <= TOLERANCE
    extra = {METADATA_FILE: ""}
    traced = torch.jit.load(str(ts_path), _extra_files=extra)
    with torch.no_grad():
        assert _relative_error(traced(x), ref) <= TOLERANCE
    assert parse_metadata(json.loads(extra[METADATA_FILE])) == meta


@pytest.mark.parametrize("argv, phrase", [
    (["--format", "onnx", "--opset", "99"], "opset 99"),
    (["--format", "torchscript", "--opset", "17"], "--opset applies to --format onnx only"),
    (["--format", "onnx", "--input-size", "30"], "input size 30"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, phrase):
    code = main(["export", "--pretrained", "none", "--out", str(tmp_path / "m"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not (tmp_path / "m").exists()
