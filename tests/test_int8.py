"""int8 inference: quantisation calibrated on the committed pictures, its agreement with fp32 on
them, the round trip through our folder format (and what a hostile folder gets), and
``--precision int8`` through quantize, classify, extract, evaluate and serve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from alexnet_zoo import alexnet, alexnet_owt, save_pretrained
from alexnet_zoo.cli.main import main
from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.deploy.quantize import calibration_batches, calibration_files, quantize
from alexnet_zoo.errors import InvalidConfig, WeightsError
from alexnet_zoo.models.quantized import QuantizedAlexNet, int8_tensor_specs
from alexnet_zoo.retrieval.features import FeatureExtractor

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
# every committed picture: Pillow's test images (one of them a truncated JPEG), the retrieval
# pictures and the README's example
PICTURES = [*calibration_files(DATA / "images"), *calibration_files(DATA / "retrieval"),
            ROOT / "examples" / "chelsea.png"]


def bvlc_layout() -> torch.nn.Module:
    """The BVLC network (Caffe's LRN, k=1) with Caffe's initialisation, seeded."""
    torch.manual_seed(0)
    return alexnet(lrn_convention="caffe", lrn_k=1.0, init="caffe").eval()


@pytest.fixture(scope="module")
def fp32():
    return bvlc_layout()


@pytest.fixture(scope="module")
def pictures(fp32) -> torch.Tensor:
    skipped: list[str] = []
    x = torch.cat(list(calibration_batches(PICTURES, ImagePreprocess(fp32.preprocessing), 8, skipped)))
    assert len(skipped) == 1 and "truncated_jpeg.jpg" in skipped[0]
    return x


@pytest.fixture(scope="module")
def int8(fp32, tmp_path_factory):
    """Quantised on the committed pictures (a folder of them, as the command reads it)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, p in enumerate(PICTURES):
        shutil.copy(p, folder / f"{i:02d}{p.suffix}")
    return quantize(fp32, folder, progress=False)


@pytest.fixture(scope="module")
def saved(int8, tmp_path_factory) -> Path:
    return save_pretrained(int8, tmp_path_factory.mktemp("int8") / "q")


# ---- the library ---------------------------------------------------------------------------------

def test_calibration_reads_the_folder_and_records_it(int8):
    calibration = int8.quantization["calibration"]
    assert calibration["files"] == len(PICTURES) and calibration["skipped"] == 1
    assert calibration["pictures"] == len(PICTURES) - 1 and int8.quantization["qengine"] in ("x86", "fbgemm", "onednn",
                                                                                            "qnnpack")
    assert int8.tensor("conv1.weight").dtype == torch.int8 and int8.tensor("fc7.weight_scale").shape == (4096,)


def test_int8_agrees_with_fp32_on_the_committed_pictures(fp32, int8, pictures):
    with torch.inference_mode():
        a, b = fp32.extract(pictures, ("conv5", "fc7", "fc8")), int8.extract(pictures, ("conv5", "fc7", "fc8"))
    assert set(b) == {"conv5", "fc7", "fc8"} and b["fc7"].dtype == torch.float32 and b["fc7"].shape == a["fc7"].shape
    assert F.cosine_similarity(a["fc7"], b["fc7"]).min() >= 0.99
    assert F.cosine_similarity(a["conv5"].flatten(1), b["conv5"].flatten(1)).min() >= 0.99
    assert (a["fc8"].argmax(1) == b["fc8"].argmax(1)).float().mean() >= 0.98
    with torch.inference_mode():  # the other entry points compute the same numbers
        torch.testing.assert_close(int8(pictures), b["fc8"])
        features = int8.forward_features(pictures)
        assert features.shape == (len(pictures), 256, 6, 6)
        torch.testing.assert_close(int8.forward_head(features, pre_logits=True), b["fc7"])


def test_round_trip_through_our_format_gives_identical_outputs(int8, saved, pictures):
    info = json.loads((saved / "config.json").read_text())
    assert info["precision"] == "int8" and info["quantization"]["calibration"]["pictures"] == len(pictures)
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        assert f.get_slice("conv2.weight").get_dtype() == "I8" and f.get_slice("fc6.weight_scale").get_dtype() == "F32"
    loaded = alexnet(pretrained=saved)
    assert isinstance(loaded, QuantizedAlexNet) and loaded.preprocessing == int8.preprocessing
    with torch.inference_mode():
        assert torch.equal(loaded(pictures), int8(pictures))
        assert torch.equal(loaded.extract(pictures, ("fc7",))["fc7"], int8.extract(pictures, ("fc7",))["fc7"])
    again = save_pretrained(loaded, saved.parent / "again") / "model.safetensors"
    first, second = load_file(str(saved / "model.safetensors")), load_file(str(again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_int8_weights_cannot_be_rebuilt_differently(saved):
    with pytest.raises(ValueError, match="int8 weights run as they were quantised"):
        alexnet(pretrained=saved, num_classes=10)
    with pytest.raises(ValueError, match="int8 weights run as they were quantised"):
        alexnet(pretrained=saved, dropout=0.1)
    with pytest.raises(ValueError, match="pre-ReLU activations need the fp32 model"):
        alexnet(pretrained=saved).extract(torch.zeros(1, 3, 227, 227), ("fc7",), relu=False)


def _tampered(saved: Path, tmp_path: Path, config: dict | None = None, **tensors: torch.Tensor) -> Path:
    out = tmp_path / "tampered"
    shutil.copytree(saved, out)
    if config is not None:
        info = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**info, **config}))
    if tensors:
        state = load_file(str(out / "model.safetensors"))
        save_file({**state, **tensors}, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize(("config", "tensors", "error", "phrase"), [
    ({"precision": "int9"}, {}, InvalidConfig, "precision must be one of 'fp32', 'int8'"),
    ({"precision": 8}, {}, InvalidConfig, "precision must be a string"),
    ({"quantization": {"qengine": ["x86"]}}, {}, InvalidConfig, "quantization.qengine must be"),
    ({"precision": "fp32"}, {}, WeightsError, "does not fit the alexnet its config.json"),  # int8 tensors, fp32 claimed
    (None, {"conv1.weight": torch.zeros(96, 3, 11, 11)}, WeightsError,
     "conv1.weight is (96, 3, 11, 11) F32, expected (96, 3, 11, 11) I8"),
    (None, {"fc6.weight": torch.zeros(4096, 10, dtype=torch.int8)}, WeightsError, "fc6.weight is (4096, 10) I8"),
    (None, {"extra": torch.zeros(1)}, WeightsError, "extra unexpected"),
    (None, {"conv3.zero_point": torch.tensor(300)}, WeightsError, "conv3.zero_point must be in [0, 255], got 300"),
    (None, {"fc7.scale": torch.tensor(0.0)}, WeightsError, "fc7.scale must be in"),
    (None, {"conv2.weight_scale": torch.full((256,), float("nan"))}, WeightsError, "conv2.weight_scale must be in"),
    (None, {"fc8.bias": torch.full((1000,), float("inf"))}, WeightsError, "fc8.bias must be finite"),
])
def test_a_hostile_int8_folder_is_refused_naming_what_is_wrong(saved, tmp_path, config, tensors, error, phrase):
    folder = _tampered(saved, tmp_path, config, **tensors)
    with pytest.raises(error) as caught:
        alexnet(pretrained=folder)
    assert phrase in str(caught.value) and str(folder) in str(caught.value)


def test_the_stored_names_are_the_specs(int8):
    specs = int8_tensor_specs(int8.config)
    assert set(int8.int8_state()) == set(specs) and "norm1.scale" in specs and "input.zero_point" in specs
    owt = int8_tensor_specs(alexnet_owt().config)
    assert "norm1.scale" not in owt  # no LRN: pooling runs on quint8 after conv1 and conv2


def test_a_cpu_without_the_int8_speed_up_gets_the_same_results(int8, pictures, monkeypatch):
    """The reference engine (qnnpack here, what a CPU without AVX2 gets) computes the same network,
    and says once that it is slow."""
    import alexnet_zoo.models.quantized as quantized

    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch has no qnnpack engine")
    quantized._warn_slow_int8.cache_clear()
    slow = QuantizedAlexNet(int8.config, int8.int8_state(), arch=int8.arch, quantization={"qengine": "qnnpack"})
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        a, b = slow.extract(pictures, ("fc7", "fc8")), int8.extract(pictures, ("fc7", "fc8"))
        slow(pictures)
    assert len([w for w in caught if "int8 was requested" in str(w.message)]) == 1
    assert F.cosine_similarity(a["fc7"], b["fc7"]).min() >= 0.999
    assert torch.equal(a["fc8"].argmax(1), b["fc8"].argmax(1))


def test_int8_is_a_cpu_precision_and_needs_int8_weights(fp32, int8):
    with pytest.raises(ValueError, match="precision int8 needs quantised weights: make them once with 'alexnet-zoo "
                                         "quantize"):
        FeatureExtractor(fp32, precision="int8", device="cpu")
    with pytest.raises(ValueError, match="these weights are int8"):
        FeatureExtractor(int8, precision="fp32", device="cpu")
    assert FeatureExtractor(int8, device="cpu").precision == "int8"
    with pytest.raises(ValueError, match="int8 inference runs on the CPU"):
        int8.extract(torch.zeros(1, 3, 227, 227, device="meta"), ("fc7",))
    with pytest.raises(ValueError, match="quantize takes fp32 AlexNet weights.*already int8"):
        quantize(int8, [torch.zeros(1, 3, 227, 227)])


def test_calibration_without_pictures_is_a_clear_error(fp32, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder of calibration pictures"):
        quantize(fp32, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pictures"):
        quantize(fp32, tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    shutil.copy(DATA / "images" / "truncated_jpeg.jpg", tmp_path / "bad" / "a.jpg")
    with pytest.raises(ValueError, match="no calibration picture could be read"):
        quantize(fp32, tmp_path / "bad", progress=False)


# ---- the commands --------------------------------------------------------------------------------

def test_quantize_command_then_classify_in_int8(fp32, tmp_path, capsys):
    weights = save_pretrained(fp32, tmp_path / "fp32")
    assert main(["quantize", "--pretrained", str(weights), "--calibration", str(DATA / "retrieval"), "--count", "2",
                 "--out", str(tmp_path / "q"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "int8" in printed and "calibrated on 2 pictures" in printed
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantization"]["weights"] == str(weights)
    argv = ["classify", str(ROOT / "examples" / "chelsea.png"), "--top", "3", "--json"]
    assert main([*argv, "--pretrained", str(tmp_path / "q"), "--precision", "int8"]) == 0
    int8_top = json.loads(capsys.readouterr().out)[0]["classes"]
    assert main([*argv, "--pretrained", str(weights), "--precision", "fp32"]) == 0
    fp32_top = json.loads(capsys.readouterr().out)[0]["classes"]
    assert int8_top[0]["index"] == fp32_top[0]["index"]
    assert abs(int8_top[0]["probability"] - fp32_top[0]["probability"]) < 0.01


@pytest.mark.parametrize(("weights", "precision", "phrase"), [
    ("fp32", "int8", "precision int8 needs quantised weights"),
    ("int8", "bf16", "these weights are int8"),
])
def test_a_precision_the_weights_cannot_take_is_one_line_and_exit_2(fp32, saved, tmp_path, capsys, weights,
                                                                    precision, phrase):
    folder = save_pretrained(fp32, tmp_path / "fp32") if weights == "fp32" else saved
    code = main(["classify", str(ROOT / "examples" / "chelsea.png"), "--pretrained", str(folder),
                 "--precision", precision])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_extract_index_and_serve_in_int8(saved, tmp_path):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from alexnet_zoo.serve.app import create_app

    images = tmp_path / "pictures"
    shutil.copytree(DATA / "retrieval", images, ignore=shutil.ignore_patterns("*.md"))
    assert main(["extract", str(images), "--out", str(tmp_path / "feat"), "--pretrained", str(saved),
                 "--precision", "int8", "--workers", "0", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "feat" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["layer"] == "fc7"
    assert main(["index", "build", str(tmp_path / "feat"), "--out", str(tmp_path / "ix")]) == 0
    with TestClient(create_app(tmp_path / "ix", pretrained=str(saved), precision="int8", device="cpu",
                               progress=False)) as client:
        assert client.get("/api/info").json()["precision"] == "int8"
        picture = images / "coffee.png"
        hits = client.post("/api/search?k=1", content=picture.read_bytes(), headers={"content-type": "image/png"})
        assert hits.status_code == 200 and Path(hits.json()["results"][0]["path"]).name == "coffee.png"


def test_evaluate_in_int8_agrees_with_fp32(fp32, saved, tmp_path):
    from alexnet_zoo.benchmarks.imagenet import main as imagenet_main

    root = tmp_path / "val"
    wnids = [c.wnid for c in imagenet_categories()]
    for i, p in enumerate(PICTURES):
        (root / wnids[i * 7]).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / wnids[i * 7] / p.name)
    argv = ["--data", str(root), "--batch-size", "4", "--workers", "0", "--no-progress"]
    q = imagenet_main([*argv, "--pretrained", str(saved), "--precision", "int8",
                       "--predictions", str(tmp_path / "q.csv")])
    f = imagenet_main([*argv, "--pretrained", str(save_pretrained(fp32, tmp_path / "fp32")), "--precision", "fp32",
                       "--predictions", str(tmp_path / "f.csv")])
    assert q["images"] == f["images"] == len(PICTURES) - 1 and q["environment"]["precision"] == "int8"
    first = [np.loadtxt(tmp_path / name, delimiter=",", skiprows=1, usecols=2, dtype=str).tolist()
             for name in ("q.csv", "f.csv")]
    assert first[0] == first[1]


def test_the_fused_uint8_lrn_pool_equals_dequantise_pool_quantise(monkeypatch):
    """The int8 LRN boundary in one native pass gives the integers of the three-step fallback."""
    from alexnet_zoo.ops.pooling import lrn_pool_quint8

    x = torch.relu(torch.randn(3, 96, 55, 55) * 30).contiguous(memory_format=torch.channels_last)
    xq = torch.quantize_per_tensor(x, 0.5, 0, torch.quint8)
    lrn = (5, 1e-4, 0.75, 1.0, "caffe")
    fused = lrn_pool_quint8(xq, True, lrn, 0.2, 3)
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    plain = lrn_pool_quint8(xq, True, lrn, 0.2, 3)
    assert fused.shape == plain.shape == (3, 96, 27, 27) and (fused.q_scale(), fused.q_zero_point()) == (0.2, 3)
    assert (fused.int_repr().int() - plain.int_repr().int()).abs().max() <= 1  # one rounding step at most
    assert (fused.int_repr() == plain.int_repr()).float().mean() > 0.999


@pytest.mark.parametrize("ceil", [True, False])
def test_the_fused_uint8_lrn_pool_gives_the_bytes_of_requantising_the_fp32_result(ceil):
    """The kernel requantises each normalised row before pooling it in bytes; rounding and clamping
    are monotone, so the bytes must be exactly those of pooling in fp32 and requantising after
    (the fp32 kernel normalises with the same code). Odd sizes: clipped windows at both edges."""
    from alexnet_zoo.ops.pooling import lrn_pool_quint8, max_pool

    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 37, 14, 17) * 40).contiguous(memory_format=torch.channels_last)
    xq = torch.quantize_per_tensor(x, 0.5, 2, torch.quint8)
    lrn = (5, 1e-4, 0.75, 2.0, "paper")
    scale, zero_point = 0.07, 5  # the top of the range clamps at 255
    fused = lrn_pool_quint8(xq, ceil, lrn, scale, zero_point).int_repr()
    pooled = max_pool(xq.dequantize().contiguous(memory_format=torch.channels_last), ceil, lrn)
    expected = (pooled * torch.tensor(1 / scale, dtype=torch.float32)).round().add(zero_point).clamp(0, 255)
    assert (expected == 255).any() and torch.equal(fused, expected.to(torch.uint8))


def test_filters_of_int8_weights_draw_their_dequantised_kernels(fp32, saved, tmp_path):
    from PIL import Image

    from alexnet_zoo.models.visualize import conv1_filter_grid

    q = alexnet(pretrained=saved)
    step = q.tensor("conv1.weight_scale").view(-1, 1, 1, 1)
    assert ((q.dequantized_weight("conv1") - fp32.conv1.weight).abs() <= step / 2 + 1e-7).all()
    assert main(["filters", "--pretrained", str(saved), "--out", str(tmp_path / "f.png")]) == 0
    assert Image.open(tmp_path / "f.png").size == conv1_filter_grid(fp32).size


def test_int8_exports_as_a_qdq_onnx_graph_onnxruntime_fuses(saved, pictures, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    assert main(["export", "--pretrained", str(saved), "--format", "onnx", "--out", str(tmp_path / "q.onnx")]) == 0
    assert "onnx" in capsys.readouterr().out
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "LRN", "MaxPool", "Gemm"} <= ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node}
    logits = torch.from_numpy(session.run(None, {"images": pictures.numpy()})[0])
    with torch.inference_mode():
        ours = alexnet(pretrained=saved)(pictures)
    assert F.cosine_similarity(logits, ours).min() >= 0.999
    assert (logits.argmax(1) == ours.argmax(1)).float().mean() >= 0.98


def test_int8_exports_as_torchscript_that_runs_without_this_package(saved, pictures, tmp_path, capsys, monkeypatch):
    out = tmp_path / "q.pt"
    assert main(["export", "--pretrained", str(saved), "--format", "torchscript", "--out", str(out)]) == 0
    assert "torchscript" in capsys.readouterr().out
    with torch.inference_mode():
        fast = alexnet(pretrained=saved)(pictures)
        monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")  # the program's LRN boundary is the torch one
        ours = alexnet(pretrained=saved)(pictures)
    # the native uint8 LRN kernel and the torch steps agree up to one rounding step at norm1 / norm2
    assert F.cosine_similarity(fast, ours).min() >= 0.999 and (fast.argmax(1) == ours.argmax(1)).all()
    torch.save({"x": pictures, "ours": ours}, tmp_path / "io.pt")
    # a fresh interpreter that never imports alexnet_zoo: the archive holds the quantized program
    script = ("import json, sys, torch\n"
              "extra = {'alexnet_zoo.json': ''}\n"
              "p = torch.jit.load(sys.argv[1], _extra_files=extra)\n"
              "io = torch.load(sys.argv[2])\n"
              "with torch.inference_mode():\n"
              "    y, y224 = p(io['x']), p(io['x'][:1, :, :224, :224])\n"
              "print(json.dumps({'diff': (y - io['ours']).abs().max().item(), 'same': bool((y.argmax(1) == "
              "io['ours'].argmax(1)).all()), 'ops': str(p.inlined_graph).count('quantized::'), 'shape224': "
              "list(y224.shape), 'arch': json.loads(extra['alexnet_zoo.json']).get('arch'), 'modules': "
              "sorted(m for m in sys.modules if m.startswith('alexnet_zoo'))}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "io.pt")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] == [] and result["ops"] >= 8 and result["shape224"] == [1, 1000]
    assert result["same"] and result["diff"] <= 1e-4 * ours.abs().max().item(), result
    assert result["arch"] == "alexnet"


def test_an_int8_folder_publishes_with_a_card_that_says_int8(saved):
    from alexnet_zoo.weights.publish import folder_card

    card = folder_card(saved, "me/alexnet-int8")
    assert "**int8** weights" in card and f"calibrated on {len(PICTURES) - 1} pictures" in card


def test_int8_weights_keep_the_fp32_weights_preprocessing_and_classes(pictures, tmp_path):
    """A model trained on WNID folders with the paper's preprocessing: its int8 copy must prepare
    pictures the same way (the calibration did) and name the same classes, or it is another model."""
    from alexnet_zoo.data.transforms import Preprocessing

    wnids = [c.wnid for c in imagenet_categories()[5:8]]
    paper = Preprocessing(resize=256, resize_mode="short_side", crop=227, interpolation="bilinear",
                          channel_order="RGB", scale=255.0, mean=(122.7, 116.7, 104.0), std=(1.0, 1.0, 1.0))
    torch.manual_seed(0)
    source = save_pretrained(alexnet(num_classes=3, hidden=64), tmp_path / "fp32", preprocessing=paper,
                             meta={"classes": wnids, "license": "CC-BY-4.0", "training": {"epoch": 1}})
    fp32 = alexnet(pretrained=source).eval()
    saved = save_pretrained(quantize(fp32, [pictures], progress=False), tmp_path / "int8")
    config = json.loads((saved / "config.json").read_text())
    assert config["preprocessing"] == paper.to_dict() and config["classes"] == wnids
    assert config["license"] == "CC-BY-4.0" and "training" not in config  # the fp32 run's, not this model's
    loaded = alexnet(pretrained=saved)
    assert loaded.preprocessing == fp32.preprocessing and loaded.pretrained_cfg["classes"] == wnids


@pytest.mark.parametrize("flag", ["--calls", "--rounds", "--batch-size", "--calibration-count"])
def test_the_int8_benchmark_refuses_counts_below_one_in_one_line(flag):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "int8.py"
    done = subprocess.run([sys.executable, str(script), flag, "0"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and f"{flag} must be at least 1, not 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_int8_layer_benchmark_times_every_stage_of_both_forwards(tmp_path):
    """benchmarks/int8_layers.py composes the models' stages itself: it must check them against the
    forward (it exits otherwise) and report every stage of both precisions."""
    script = ROOT / "benchmarks" / "int8_layers.py"
    out = tmp_path / "layers.json"
    done = subprocess.run([sys.executable, str(script), "--pictures", str(DATA / "retrieval"), "--batch-size", "2",
                           "--rounds", "1", "--calibration-count", "4", "--gemms", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    stages = ["input", "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    for precision in ("fp32", "int8"):
        assert list(report["median_seconds"][precision]) == stages
        assert all(s > 0 for s in report["median_seconds"][precision].values())
    assert "total" in done.stdout and report["environment"]["batch_size"] == 2
    assert list(report["winograd_gemm_gmacs"]) == [f"F({m}x{m},3x3)" for m in (2, 3, 4, 5)]
    assert all(r["int8"] > 0 and r["fp32"] > 0 for r in report["winograd_gemm_gmacs"].values())
    bad = subprocess.run([sys.executable, str(script), "--rounds", "0"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert bad.returncode == 2 and "--rounds must be at least 1, not 0" in bad.stderr
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "model.safetensors").write_bytes(b"\x10\x00not a header")
    for argv, named in ((["--pictures", str(tmp_path / "nowhere")], "nowhere"),
                        (["--pretrained", str(tmp_path / "damaged"), "--pictures", str(DATA / "retrieval")],
                         "model.safetensors")):
        bad = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300,
                             check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and named in bad.stderr, bad.stderr
