"""The converters end to end: real ONNX, Caffe and torchvision files written here with random
weights, converted, loaded strictly, and run against onnxruntime / torchvision; and the files
they must refuse."""

import importlib
import inspect
import struct
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from alexnet_zoo import alexnet, alexnet_owt
from alexnet_zoo.errors import ConversionError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import PAPER
from alexnet_zoo.weights.convert import convert_file

DATA = Path(__file__).parent / "data"
LEARNED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    """Random two-tower AlexNet parameters in our names; He-scaled so every layer's activations
    (and LRN) stay far from trivial."""
    rng = np.random.default_rng(0)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AlexNet(PAPER).state_dict().items()}
    out = {}
    for key, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        std = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1
        out[key] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)
    return out


def images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size) * 50  # mean-subtracted 0-255 pixels: LRN is far from identity


# ---- ONNX, BVLC / Caffe2 layout ------------------------------------------------------------------

def bvlc_graph(weights: dict[str, np.ndarray]):
    """The ONNX model zoo's bvlcalexnet graph as Caffe2 exported it: data_0 in, Caffe2 names,
    floor pooling with pool5 padded bottom/right, Reshape, Gemm transB=1, Dropout, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(weights[f"{layer}.{leaf}"], f"{layer}_{short}_0")
             for layer in LEARNED for leaf, short in (("weight", "w"), ("bias", "b"))]
    inits.append(numpy_helper.from_array(np.array([-1, 9216], np.int64), "OC2_DUMMY_1"))
    nodes, x = [], "data_0"

    def add(op, name, extra=(), **attrs):
        nonlocal x
        nodes.append(helper.make_node(op, [x, *extra], [f"{name}_1"], name=name, **attrs))
        x = f"{name}_1"

    convs = {1: (11, 4, 0, 1), 2: (5, 1, 2, 2), 3: (3, 1, 1, 1), 4: (3, 1, 1, 2), 5: (3, 1, 1, 2)}
    for i, (k, s, p, g) in convs.items():
        add("Conv", f"conv{i}", (f"conv{i}_w_0", f"conv{i}_b_0"), kernel_shape=[k, k], strides=[s, s],
            pads=[p] * 4, group=g, dilations=[1, 1])
        add("Relu", f"relu{i}")
        if i in (1, 2):
            add("LRN", f"norm{i}", size=5, alpha=1e-4, beta=0.75, bias=1.0)
        if i in (1, 2, 5):
            add("MaxPool", f"pool{i}", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1] if i == 5 else [0] * 4)
    add("Reshape", "OC2_DUMMY_0", ("OC2_DUMMY_1",))
    for layer in ("fc6", "fc7", "fc8"):
        add("Gemm", layer, (f"{layer}_w_0", f"{layer}_b_0"), transB=1)
        if layer != "fc8":
            add("Relu", f"relu{layer[2:]}")
            add("Dropout", f"drop{layer[2:]}")
    add("Softmax", "prob")
    graph = helper.make_graph(nodes, "AlexNet",
                              [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["N", 3, 227, 227])],
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, producer_name="onnx-caffe2", opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    return model


@pytest.fixture(scope="module")
def bvlc_model(weights):
    pytest.importorskip("onnx")
    return bvlc_graph(weights)


def save(model, path: Path) -> Path:
    import onnx

    onnx.save_model(model, str(path))
    return path


def copy(model):
    clone = type(model)()
    clone.CopyFrom(model)
    return clone


def node(model, name: str):
    return next(n for n in model.graph.node if n.name == name)


def run_ort(model, x: torch.Tensor, extra_output: str | None = None) -> list[np.ndarray]:
    """onnxruntime's answer for ``model`` (plus an intermediate tensor as a second output)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    if extra_output:
        model = copy(model)
        model.graph.output.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {model.graph.input[0].name: x.numpy()})


def test_bvlc_onnx_matches_onnxruntime(bvlc_model, weights, tmp_path):
    converted = convert_file(save(bvlc_model, tmp_path / "bvlcalexnet-12.onnx"))
    assert converted.arch == "alexnet"
    assert converted.config == {"lrn_convention": "caffe", "lrn_k": 1.0, "lrn_alpha": 1e-4, "lrn_beta": 0.75,
                                "lrn_size": 5}
    for key, value in weights.items():
        assert torch.equal(converted.state_dict[key], torch.from_numpy(value)), key
    model = alexnet(**converted.config).eval()
    model.load_state_dict(converted.state_dict)
    x = images(227)
    prob, logits = run_ort(bvlc_model, x, extra_output="fc8_1")
    with torch.inference_mode():
        ours = model(x)
    assert rel_err(ours, logits) <= 1e-4
    assert np.abs(torch.softmax(ours, 1).numpy() - prob).max() <= 1e-5


def test_bvlc_onnx_names_without_suffix_and_external_data(bvlc_model, weights, tmp_path):
    import onnx

    model = copy(bvlc_model)
    renamed = {t.name: t.name[:-2] for t in model.graph.initializer if t.name.endswith(("_w_0", "_b_0"))}
    for t in model.graph.initializer:
        t.name = renamed.get(t.name, t.name)
    for n in model.graph.node:
        n.input[:] = [renamed.get(i, i) for i in n.input]
    path = tmp_path / "bvlcalexnet.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="bvlcalexnet.data")
    converted = convert_file(path, arch="alexnet")
    assert torch.equal(converted.state_dict["fc6.weight"], torch.from_numpy(weights["fc6.weight"]))
    (tmp_path / "bvlcalexnet.data").unlink()
    with pytest.raises(ConversionError, match="cannot read initializer 'conv1_w'"):
        convert_file(path)


def test_onnx_matmul_add_layers(bvlc_model, weights, tmp_path):
    """Fully connected layers as MatMul (weight stored (in, out)) + Add, as some exporters write."""
    from onnx import helper, numpy_helper

    model = copy(bvlc_model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)
    model.graph.ClearField("node")
    for n in nodes:
        if n.op_type != "Gemm":
            model.graph.node.append(n)
            continue
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(weights[f"{n.name}.weight"].T.copy(), n.input[1]))
        model.graph.node.extend([helper.make_node("MatMul", n.input[:2], [f"{n.name}_mm"], name=f"{n.name}_mm"),
                                 helper.make_node("Add", [f"{n.name}_mm", n.input[2]], n.output, name=n.name)])
    converted = convert_file(save(model, tmp_path / "matmul.onnx"))
    for key, value in weights.items():
        assert torch.equal(converted.state_dict[key], torch.from_numpy(value)), key


def edit_group(model):
    [a for a in node(model, "conv2").attribute if a.name == "group"][0].i = 1


def drop_initializer(model):
    inits = model.graph.initializer
    del inits[[t.name for t in inits].index("conv3_w_0")]


def wrong_shape(model):
    from onnx import numpy_helper

    inits = model.graph.initializer
    i = [t.name for t in inits].index("fc7_w_0")
    inits[i].CopyFrom(numpy_helper.from_array(np.zeros((4096, 4095), np.float32), "fc7_w_0"))


def insert_op(model):
    from onnx import helper

    relu = node(model, "relu3")
    relu.output[0] = "relu3_scaled"
    scale = helper.make_node("Mul", ["relu3_scaled", "fc6_b_0"], ["relu3_1"], name="mystery")
    nodes = list(model.graph.node)
    model.graph.ClearField("node")
    for n in nodes:
        model.graph.node.append(n)
        if n.name == "relu3":
            model.graph.node.append(scale)


def caffenet_order(model):  # pool before LRN: BVLC's CaffeNet, a different network
    norm, pool = node(model, "norm1"), node(model, "pool1")
    norm.op_type, pool.op_type = "MaxPool", "LRN"
    norm.ClearField("attribute")
    pool.ClearField("attribute")


@pytest.mark.parametrize("edit,message", [
    (edit_group, r"conv2.*'group': 1.*expected.*'group': 2"),
    (drop_initializer, r"'conv3_w_0' is not an initializer"),
    (wrong_shape, r"'fc7_w_0' \(fc7.weight\) has shape \(4096, 4095\); expected \(4096, 4096\)"),
    (insert_op, r"'mystery' \(Mul\) is not part of AlexNet"),
    (caffenet_order, r"node 'norm1' \(MaxPool\).*expected lrn \(norm1\)"),
])
def test_onnx_refuses_what_differs(bvlc_model, tmp_path, edit, message):
    model = copy(bvlc_model)
    edit(model)
    with pytest.raises(ConversionError, match=message):
        convert_file(save(model, tmp_path / "bad.onnx"))


def test_onnx_refuses_truncated_file(bvlc_model, tmp_path):
    data = save(bvlc_model, tmp_path / "full.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"cut.onnx: not a readable ONNX model"):
        convert_file(tmp_path / "cut.onnx")


# ---- ONNX, torchvision export --------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchvision_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    net = torchvision.models.alexnet().eval()
    path = tmp_path_factory.mktemp("tv") / "alexnet_Opset17.onnx"
    # the TorchScript exporter (deprecated): the torch.export-based one needs onnxscript
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), str(path), opset_version=17,
                          input_names=["input"], dynamic_axes={"input": {0: "N"}}, **legacy)
    return net, path


def test_torchvision_onnx_matches_onnxruntime(torchvision_onnx):
    import onnx

    net, path = torchvision_onnx
    converted = convert_file(path)
    assert converted.arch == "alexnet_owt" and converted.config == {}
    assert torch.equal(converted.state_dict["fc7.weight"], net.classifier[4].weight)
    model = alexnet_owt(**converted.config).eval()
    model.load_state_dict(converted.state_dict)
    x = images(224)
    (ref,) = run_ort(onnx.load(str(path)), x)
    with torch.inference_mode():
        assert rel_err(model(x), ref) <= 1e-4


def test_torchvision_onnx_is_not_bvlc(torchvision_onnx):
    with pytest.raises(ConversionError, match=r"expected lrn \(norm1\) of alexnet"):
        convert_file(torchvision_onnx[1], arch="alexnet")


# ---- Caffe ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def caffe_pb2(tmp_path_factory):
    """Python bindings of BVLC's caffe.proto, generated now (the reader under test uses none)."""
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is needed to compile caffe.proto")
    out = tmp_path_factory.mktemp("caffe_pb2")
    assert protoc.main(["protoc", f"-I{DATA}", f"--python_out={out}", str(DATA / "caffe.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("caffe_pb2")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def caffe_blobs(caffe_pb2, weights):
    """One BlobProto per parameter, with a BlobShape (the modern form)."""
    blobs = {}
    for key, value in weights.items():
        blob = caffe_pb2.BlobProto()
        blob.shape.dim.extend(value.shape)
        blob.data[:] = value.ravel().tolist()
        blobs[key] = blob
    return blobs


def legacy(blob, caffe_pb2):
    """The same blob in the pre-BlobShape form: num/channels/height/width, padded with ones."""
    dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
    out = caffe_pb2.BlobProto()
    out.CopyFrom(blob)
    out.ClearField("shape")
    out.num, out.channels, out.height, out.width = dims
    return out


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def unpacked_conv1(weights) -> bytes:
    """A LayerParameter for conv1 written by hand with one record per float (unpacked), as some
    writers do: legal protobuf for a packed field, which protobuf's own writer never produces."""
    blobs = b""
    for leaf in ("weight", "bias"):
        value = weights[f"conv1.{leaf}"]
        shape = length_delimited(1, b"".join(varint(d) for d in value.shape))
        data = b"".join(key(5, 5) + struct.pack("<f", v) for v in value.ravel().tolist())
        blobs += length_delimited(7, length_delimited(7, shape) + data)
    return length_delimited(1, b"conv1") + length_delimited(2, b"Convolution") + blobs


def caffe_net(fmt: str, caffe_pb2, caffe_blobs, weights) -> bytes:
    """A serialized BVLC AlexNet NetParameter in one of Caffe's three layer formats."""
    net = caffe_pb2.NetParameter(name="AlexNet")
    v1 = caffe_pb2.V1LayerParameter
    for name, v2_type, v1_type, v0_type in (
            ("data", "Input", v1.DATA, "data"), ("conv1", "Convolution", v1.CONVOLUTION, "conv"),
            ("relu1", "ReLU", v1.RELU, "relu"), ("norm1", "LRN", v1.LRN, "lrn"),
            *[(f"conv{i}", "Convolution", v1.CONVOLUTION, "conv") for i in range(2, 6)],
            *[(f"fc{i}", "InnerProduct", v1.INNER_PRODUCT, "innerproduct") for i in range(6, 9)],
            ("prob", "Softmax", v1.SOFTMAX, "softmax")):
        learned = [caffe_blobs[f"{name}.{leaf}"] for leaf in ("weight", "bias")] if name in LEARNED else []
        if fmt == "layer":
            if name == "conv1":
                continue  # appended by hand below, unpacked
            layer = net.layer.add(name=name, type=v2_type)
            layer.blobs.extend(learned)
        elif fmt == "layers":
            layer = net.layers.add(name=name, type=v1_type)
            layer.blobs.extend(legacy(b, caffe_pb2) for b in learned)
            if name == "conv3":  # a double-precision blob
                layer.blobs[1].ClearField("data")
                layer.blobs[1].double_data.extend(caffe_blobs["conv3.bias"].data)
        else:
            layer = net.layers.add().layer
            layer.name, layer.type = name, v0_type
            layer.blobs.extend(legacy(b, caffe_pb2) for b in learned)
    data = net.SerializeToString()
    if fmt == "layer":
        data += length_delimited(100, unpacked_conv1(weights))
        parsed = caffe_pb2.NetParameter.FromString(data).layer[-1]  # protobuf itself agrees with the bytes
        assert parsed.name == "conv1" and parsed.blobs[1].data[:] == caffe_blobs["conv1.bias"].data[:]
    return data


@pytest.mark.parametrize("fmt", ["layer", "layers", "v0"])
def test_caffemodel_all_formats(fmt, caffe_pb2, caffe_blobs, weights, tmp_path):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(caffe_net(fmt, caffe_pb2, caffe_blobs, weights))
    converted = convert_file(path)
    assert converted.arch == "alexnet" and converted.config == {"lrn_convention": "caffe", "lrn_k": 1.0}
    assert set(converted.state_dict) == set(weights)
    for key_, value in weights.items():
        assert torch.equal(converted.state_dict[key_], torch.from_numpy(value)), key_
    model = alexnet(**converted.config).eval()
    model.load_state_dict(converted.state_dict)
    with torch.inference_mode():
        out = model(images(227, 1))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def small_net(caffe_pb2, name: str, shape: tuple[int, ...]) -> bytes:
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name=name, type="Convolution")
    for dims in (shape, shape[:1]):
        blob = layer.blobs.add()
        blob.shape.dim.extend(dims)
        blob.data.extend([0.5] * int(np.prod(dims)))
    return net.SerializeToString()


@pytest.mark.parametrize("name,shape,message", [
    ("conv2", (256, 96, 5, 5), r"layer 'conv2' weight blob has shape \(256, 96, 5, 5\); expected \(256, 48, 5, 5\)"),
    ("conv6", (8, 8, 3, 3), r"layer 'conv6' \(Convolution\) has learned blobs but is not one of AlexNet's"),
])
def test_caffemodel_refuses_what_differs(caffe_pb2, tmp_path, name, shape, message):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(small_net(caffe_pb2, name, shape))
    with pytest.raises(ConversionError, match=message):
        convert_file(path)


def test_caffemodel_refuses_truncated_and_incomplete(caffe_pb2, tmp_path):
    data = small_net(caffe_pb2, "conv1", (96, 3, 11, 11))
    (tmp_path / "cut.caffemodel").write_bytes(data[:-100])
    with pytest.raises(ConversionError, match=r"cut.caffemodel: not a readable Caffe NetParameter.*truncated"):
        convert_file(tmp_path / "cut.caffemodel")
    (tmp_path / "one.caffemodel").write_bytes(data)
    with pytest.raises(ConversionError, match=r"no learned blobs for conv2, conv3"):
        convert_file(tmp_path / "one.caffemodel")


# ---- torchvision .pth ----------------------------------------------------------------------------

def test_torchvision_pth_matches_torchvision(tmp_path):
    net = torchvision.models.alexnet().eval()
    torch.save(net.state_dict(), tmp_path / "alexnet-owt.pth")
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    for name in ("alexnet-owt.pth", "checkpoint.pt"):
        converted = convert_file(tmp_path / name)
        assert converted.arch == "alexnet_owt"
        model = alexnet_owt(**converted.config).eval()
        model.load_state_dict(converted.state_dict)
        x = images(224)
        with torch.inference_mode():
            assert rel_err(model(x), net(x)) <= 1e-5


def test_torchvision_pth_refusals(tmp_path):
    state = torchvision.models.alexnet(num_classes=10).state_dict()
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(ConversionError, match=r"'classifier.6.weight' has shape \(10, 4096\)"):
        convert_file(tmp_path / "ten.pth")
    torch.save(torchvision.models.alexnet(), tmp_path / "pickled.pth")  # a whole module: code, not data
    with pytest.raises(ConversionError, match=r"pickled.pth: not a plain state dict"):
        convert_file(tmp_path / "pickled.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "ten.pth").read_bytes()[:5000])
    with pytest.raises(ConversionError, match=r"cut.pth: not a readable torch checkpoint"):
        convert_file(tmp_path / "cut.pth")


# ---- the dispatcher ------------------------------------------------------------------------------

def test_convert_file_refuses_unknown_suffix_and_wrong_arch(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ConversionError, match=r"weights.bin: unknown weight file type '.bin'"):
        convert_file(tmp_path / "weights.bin")
    with pytest.raises(ConversionError, match=r"\.caffemodel files hold alexnet weights, not alexnet_owt"):
        convert_file(tmp_path / "x.caffemodel", arch="alexnet_owt")
    with pytest.raises(ConversionError, match=r"missing.onnx: no such file"):
        convert_file(tmp_path / "missing.onnx")
