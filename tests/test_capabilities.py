"""CPU capabilities decide the fast paths: what an AVX2 CPU gets is checked on any x86 CPU by capping
ATen and oneDNN (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) in a fresh process, since both
read the caps once, when torch loads."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo.eval.precision import resolve_precision
from alexnet_zoo.ops.capabilities import cpu_capabilities

ROOT = Path(__file__).resolve().parents[1]
X86 = cpu_capabilities().machine in ("x86_64", "amd64")
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _run(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (caps apply at torch's import); it prints one JSON line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_capabilities_are_consistent_here():
    caps = cpu_capabilities()
    assert caps.native_bf16 <= caps.onednn_bf16  # native bf16 is only used through oneDNN
    assert caps.avx512_bf16 <= caps.avx512 and caps.amx <= caps.avx512
    assert caps.machine in caps.summary() and caps.isa in caps.summary()
    assert resolve_precision("auto", torch.device("cpu")) in (("fp32", "bf16") if caps.native_bf16 else ("fp32",))
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_auto_on_the_cpu_is_measured_once_and_kept(tmp_path, monkeypatch):
    """Flags cannot say whether bf16 is faster (1.8x on a Zen 4, 0.53x on an AMX-less Xeon, with the
    same AVX512-BF16): ``auto`` times the network once per machine and keeps the answer on disk."""
    from alexnet_zoo.eval import precision

    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: dataclasses.replace(cpu_capabilities(), native_bf16=True))
    timings, measure = [], precision._time_network

    def timed(*args, **kwargs):
        timings.append(measure(batch=1, rounds=1))
        return timings[-1]

    monkeypatch.setattr(precision, "_time_network", timed)
    precision._measured_choice.cache_clear()
    first = precision.fastest_cpu_precision()
    fp32_s, bf16_s = timings[0]
    assert first == ("bf16" if fp32_s > 1.1 * bf16_s else "fp32")
    stored = json.loads((tmp_path / "precision.json").read_text())
    assert list(stored.values()) == [first]
    key = next(iter(stored))
    (tmp_path / "precision.json").write_text(json.dumps({key: "bf16" if first == "fp32" else "fp32"}))
    precision._measured_choice.cache_clear()
    assert precision.fastest_cpu_precision() != first and len(timings) == 1  # read back, not measured again
    (tmp_path / "precision.json").write_text("[not a mapping")  # a damaged file is measured over
    precision._measured_choice.cache_clear()
    assert precision.fastest_cpu_precision() in ("fp32", "bf16") and len(timings) == 2
    precision._measured_choice.cache_clear()


@pytest.mark.skipif(not X86, reason="the AVX2 caps are x86 ISA names")
def test_avx2_caps_give_the_decisions_of_an_avx2_cpu():
    out = _run("""
        import json
        from alexnet_zoo.ops.capabilities import cpu_capabilities
        import torch
        from alexnet_zoo.eval.precision import resolve_precision
        print(json.dumps({**cpu_capabilities().as_dict(), "auto": resolve_precision("auto", torch.device("cpu"))}))
    """, **AVX2_CAPS)
    assert out["isa"] == "AVX2" and not out["avx512"] and not out["avx512_bf16"] and not out["amx"]
    assert not out["onednn_bf16"] and not out["native_bf16"] and out["auto"] == "fp32"


@pytest.mark.skipif(not X86, reason="the AVX2 caps are x86 ISA names")
@pytest.mark.parametrize("native", ["1", "0"])
def test_bf16_on_an_avx2_cpu_is_correct_and_warns_once(native):
    """The fault: oneDNN refused bf16 primitives on AVX2 and every bf16 forward pass raised."""
    out = _run("""
        import json, warnings
        import torch, torch.nn.functional as F
        from alexnet_zoo import alexnet
        from alexnet_zoo.retrieval.features import FeatureExtractor
        model = alexnet().eval()
        x = torch.randn(2, 3, 227, 227) * 50
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.inference_mode():
                ref = model(x)
                with torch.autocast("cpu", torch.bfloat16):
                    a = model(x)
                    b = model(x)
            feats = FeatureExtractor(model, "fc7", device="cpu", precision="bf16")(x)
        bf16 = [str(w.message) for w in caught if "bf16" in str(w.message)]
        print(json.dumps({"dtype": str(a.dtype), "cos": F.cosine_similarity(a.float(), ref).min().item(),
                          "same": torch.equal(a, b), "warnings": bf16, "feats": list(feats.shape)}))
    """, **AVX2_CAPS, ALEXNET_ZOO_NATIVE=native)
    assert out["dtype"] == "torch.bfloat16" and out["cos"] > 0.99 and out["same"] and out["feats"] == [2, 4096]
    assert len(out["warnings"]) == 1 and "slower than fp32" in out["warnings"][0] and "AVX2" in out["warnings"][0]


def test_model_built_inside_inference_mode_runs_and_sees_new_weights(path):
    """The fault: "Inference tensors do not track version counter" from the prepacked-weights cache."""
    x = torch.randn(2, 3, 227, 227)
    with torch.inference_mode():
        model, other = alexnet().eval(), alexnet().eval()
        first = model(x)
        model.load_state_dict(other.state_dict())  # in place: no version counter to notice it
        second, expected = model(x), other(x)
    assert not torch.allclose(first, expected)
    assert torch.allclose(second, expected, atol=1e-4)


def test_pretrained_model_is_loaded_not_initialised(tmp_path):
    """Built on the meta device and assigned the stored tensors: real fp32 values, no meta left."""
    source = alexnet(num_classes=7).eval()
    save_pretrained(source.half(), tmp_path / "w")  # stored as fp16: the model still computes in fp32
    model = alexnet(pretrained=tmp_path / "w").eval()
    params = dict(model.named_parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 and p.requires_grad for p in params.values())
    assert torch.equal(params["fc8.weight"], source.fc8.weight.float()) and model.fc8.out_features == 7
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        assert F.cosine_similarity(model(x), source.float()(x)).item() > 0.999


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_resize_and_crop_equal_torchvision_pixel_for_pixel(layout):
    """transforms.py computes torchvision v2's uint8 resize and centre crop itself (so a one-picture
    classify never imports torchvision); the pixels must stay torchvision's."""
    from torchvision.transforms.v2 import functional as TF

    from alexnet_zoo.data.transforms import center_crop, resize_uint8

    g = torch.Generator().manual_seed(0)
    for h, w in [(375, 500), (500, 375), (256, 256), (57, 1003), (2, 3), (255, 257), (1632, 2400)]:
        image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)
        if layout == "chw":
            image = image.contiguous()
        for size in ([256], [256, 256], [227], [300, 200], [h, w]):
            ours = resize_uint8(image, size)
            theirs = TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            assert ours.shape == theirs.shape and torch.equal(ours, theirs), (h, w, size)
        for crop in (1, 2, 227, min(h, w)):
            if crop <= min(h, w):
                assert torch.equal(center_crop(image, crop), TF.center_crop(image, [crop, crop])), (h, w, crop)
        assert torch.equal(center_crop(image, max(h, w) + 3), TF.center_crop(image, [max(h, w) + 3] * 2))


def test_one_picture_classify_never_imports_torchvision(tmp_path):
    """Start-up: torchvision's import (and torch._dynamo with it) costs 1.2 s of a 3 s classify."""
    save_pretrained(alexnet(num_classes=3), tmp_path / "w")
    out = _run(f"""
        import json, sys
        from alexnet_zoo.cli.main import main
        code = main(["classify", {str(ROOT / 'examples' / 'chelsea.png')!r}, "--pretrained", {str(tmp_path / 'w')!r}, "--top", "3"])
        print(json.dumps({{"code": code, "loaded": sorted(m for m in ("torchvision", "torch._dynamo") if m in sys.modules)}}))
    """)
    assert out == {"code": 0, "loaded": []}
