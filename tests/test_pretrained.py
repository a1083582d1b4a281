"""Our weights format, the builders' pretrained= argument, weight specs and model cards."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet_zoo import alexnet, alexnet_owt, get_weight_spec, list_pretrained, save_pretrained
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING
from alexnet_zoo.errors import InvalidReference, UnknownWeights, WeightsError
from alexnet_zoo.weights import specs as weights_module
from alexnet_zoo.weights.cards import model_card
from alexnet_zoo.weights.store import WeightsRef, resolve_reference

WEIGHTS_DIR = Path(__file__).parents[1] / "weights"


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("build,kwargs", [(alexnet, {}), (alexnet, {"lrn_convention": "caffe", "lrn_k": 1.0}),
                                          (alexnet_owt, {}), (alexnet, {"num_classes": 10})])
def test_save_pretrained_round_trips_exactly(tmp_path, build, kwargs):
    model = build(**kwargs).eval()
    save_pretrained(model, tmp_path / "m", preprocessing=BVLC_PREPROCESSING)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    assert info["architecture"] == build.__name__ and info["config"]["lrn_k"] == model.config.lrn_k
    again = build(pretrained=tmp_path / "m").eval()
    assert again.config == model.config and same_weights(model, again)
    assert again.preprocessing == BVLC_PREPROCESSING
    x = torch.randn(2, 3, 227, 227) * 50
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


def test_re_saving_loaded_weights_keeps_their_preprocessing_and_classes(tmp_path):
    """Weights trained on WNID folders with the paper's preprocessing, loaded and saved again (after
    a fine-tune, say): the copy must still prepare pictures that way and name the same classes."""
    from alexnet_zoo.data.transforms import Preprocessing

    paper = Preprocessing(resize=256, resize_mode="short_side", crop=227, interpolation="bilinear",
                          channel_order="RGB", scale=255.0, mean=(122.7, 116.7, 104.0), std=(1.0, 1.0, 1.0))
    wnids = ["n01440764", "n01443537", "n01484850"]
    first = save_pretrained(alexnet(num_classes=3, hidden=64), tmp_path / "a", preprocessing=paper,
                            meta={"classes": wnids, "license": "CC-BY-4.0", "training": {"epoch": 1}})
    again = save_pretrained(alexnet(pretrained=first), tmp_path / "b")
    info = json.loads((again / "config.json").read_text())
    assert info["preprocessing"] == paper.to_dict() and info["classes"] == wnids and info["license"] == "CC-BY-4.0"
    assert "training" not in info  # it described the first run's weights, not whatever these are now
    loaded = alexnet(pretrained=again)
    assert loaded.preprocessing == paper and loaded.pretrained_cfg["classes"] == wnids
    other = save_pretrained(alexnet(pretrained=first), tmp_path / "c", preprocessing=BVLC_PREPROCESSING,
                            meta={"classes": ["a", "b", "c"]})  # what the caller says wins
    assert alexnet(pretrained=other).preprocessing == BVLC_PREPROCESSING
    assert json.loads((other / "config.json").read_text())["classes"] == ["a", "b", "c"]


def test_loading_into_the_wrong_builder_is_refused(tmp_path):
    save_pretrained(alexnet_owt(), tmp_path)
    with pytest.raises(ValueError, match="alexnet_owt"):
        alexnet(pretrained=tmp_path)


def test_new_num_classes_keeps_the_body_and_replaces_fc8(tmp_path):
    model = alexnet()
    save_pretrained(model, tmp_path)
    tuned = alexnet(pretrained=tmp_path, num_classes=7)
    assert tuned.fc8.out_features == 7
    assert torch.equal(tuned.fc7.weight, model.fc7.weight) and torch.equal(tuned.conv1.weight, model.conv1.weight)


def test_damaged_files_are_typed_errors(tmp_path):
    save_pretrained(alexnet(), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json"):
        alexnet(pretrained=tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "config.json").unlink()
    with pytest.raises(WeightsError, match="model.safetensors"):
        alexnet(pretrained=tmp_path)


def test_specs_are_complete_and_consistent():
    names = list_pretrained()
    assert {"alexnet.bvlc_in1k", "alexnet_owt.tv_in1k"} <= set(names)
    assert get_weight_spec("alexnet").name == "alexnet.bvlc_in1k"  # the default for pretrained=True
    for name in names:
        spec = get_weight_spec(name)
        assert spec.name.startswith(spec.arch + ".") and spec.sources and spec.metrics and spec.license
        model = (alexnet if spec.arch == "alexnet" else alexnet_owt)(**spec.config)
        assert sum(p.numel() for p in model.parameters()) == spec.num_params
        assert len(spec.categories) == 1000 and spec.categories[281].name == "tabby"
        x = spec.transforms()(Image.new("RGB", (300, 200), (120, 110, 100)))
        assert x.shape == (3, spec.preprocessing.crop, spec.preprocessing.crop)
    with pytest.raises(KeyError, match="known names"):
        get_weight_spec("alexnet.nope")


@pytest.mark.parametrize("name", ["alexnet.bvlc_in1k", "alexnet_owt.tv_in1k"])
def test_committed_model_cards_are_current(name):
    card = WEIGHTS_DIR / name / "README.md"
    assert card.read_text() == model_card(get_weight_spec(name)), \
        f"regenerate with: python -m alexnet_zoo.weights.cards {name} > {card}"


@pytest.mark.parametrize("name,arch,expected", [
    ("alexnet.bvlc_in1k", None, "alexnet.bvlc_in1k"), ("bvlc_in1k", None, "alexnet.bvlc_in1k"),
    ("alexnet", None, "alexnet.bvlc_in1k"), ("tv_in1k", None, "alexnet_owt.tv_in1k"),
    ("alexnet_owt", None, "alexnet_owt.tv_in1k"), ("bvlc_in1k", "alexnet", "alexnet.bvlc_in1k"),
])
def test_one_name_resolver(name, arch, expected):
    assert get_weight_spec(name, arch).name == expected


def test_unknown_and_ambiguous_names_list_what_is_known(monkeypatch):
    with pytest.raises(UnknownWeights) as info:
        get_weight_spec("bvlc")
    assert isinstance(info.value, KeyError) and isinstance(info.value, WeightsError)
    assert str(info.value) == ("no pretrained weights named 'bvlc'; known names: alexnet.bvlc_in1k, "
                               "alexnet_owt.tv_in1k, bvlc_in1k, tv_in1k, alexnet, alexnet_owt")
    # two archs with the same tag: the bare tag needs the builder's arch, and is no known name on its own
    owt = get_weight_spec("alexnet_owt.tv_in1k")
    monkeypatch.setattr(weights_module, "_SPECS", (*weights_module._SPECS,
                                                   dataclasses.replace(owt, name="alexnet.tv_in1k", arch="alexnet")))
    assert get_weight_spec("tv_in1k", "alexnet").name == "alexnet.tv_in1k"
    assert get_weight_spec("tv_in1k", "alexnet_owt").name == "alexnet_owt.tv_in1k"
    with pytest.raises(UnknownWeights, match="'tv_in1k' is ambiguous: alexnet_owt.tv_in1k, alexnet.tv_in1k"):
        get_weight_spec("tv_in1k")
    assert "tv_in1k" not in weights_module.known_names()


def test_model_card_command_takes_every_name():
    run = [sys.executable, "-m", "alexnet_zoo.weights.cards"]
    out = subprocess.run([*run, "bvlc_in1k"], capture_output=True, text=True, check=True).stdout
    assert out == model_card(get_weight_spec("alexnet.bvlc_in1k"))
    bad = subprocess.run([*run, "bvlc"], capture_output=True, text=True)
    assert bad.returncode == 2 and "known names: alexnet.bvlc_in1k" in bad.stderr and "Traceback" not in bad.stderr


def _our_folder(folder: Path) -> Path:
    save_pretrained(alexnet_owt(num_classes=3), folder)
    return folder


@pytest.mark.parametrize("ref,expected", [
    ("alexnet.bvlc_in1k", WeightsRef("spec", "alexnet.bvlc_in1k", arch="alexnet")),
    ("bvlc_in1k", WeightsRef("spec", "alexnet.bvlc_in1k", arch="alexnet")),
    ("alexnet_owt", WeightsRef("spec", "alexnet_owt.tv_in1k", arch="alexnet_owt")),
    ("hf-hub:org/repo", WeightsRef("hf-hub", "org/repo")),
    ("hf-hub:org/repo@v1", WeightsRef("hf-hub", "org/repo", "v1")),
])
def test_untrusted_references_that_are_allowed(ref, expected):
    assert resolve_reference(ref) == expected
    assert str(resolve_reference(ref)) == (expected.name if expected.kind == "spec" else ref)


@pytest.mark.parametrize("ref", [
    "/etc/passwd", "../../weights", "folder", "hf-hub:../..", "hf-hub:org/repo@../../../x", "hf-hub:org/%2e%2e",
    "hf-hub:org/repo@", "hf-hub:", "https://example.com/w.safetensors", "bvlc_in1k\n", "", "random", "default",
    None, 1, ["alexnet.bvlc_in1k"], {"name": "alexnet.bvlc_in1k"}, "x" * 5000,
])
def test_untrusted_references_that_are_refused(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _our_folder(tmp_path / "folder")
    with pytest.raises(InvalidReference):
        resolve_reference(ref)


def test_local_folders_only_when_the_caller_opts_in(tmp_path, monkeypatch):
    folder = _our_folder(tmp_path / "mine")
    with pytest.raises(InvalidReference, match="hf-hub:org/repo"):
        resolve_reference(str(folder))
    ref = resolve_reference(str(folder), allow_local=True)
    assert ref == WeightsRef("local", str(folder)) and alexnet_owt(pretrained=ref).fc8.out_features == 3
    (tmp_path / "w.onnx").write_bytes(b"\x08\x07")  # an upstream file: its converter would parse foreign bytes
    with pytest.raises(InvalidReference, match="must be a folder"):
        resolve_reference(str(tmp_path / "w.onnx"), allow_local=True)
    assert resolve_reference(str(tmp_path / "w.onnx"), trusted=True) == WeightsRef("local", str(tmp_path / "w.onnx"))
    # a folder named like a spec in the working directory does not capture an untrusted spec name
    monkeypatch.chdir(tmp_path)
    _our_folder(tmp_path / "bvlc_in1k")
    assert resolve_reference("bvlc_in1k", allow_local=True).kind == "spec"
    assert resolve_reference("bvlc_in1k", trusted=True) == WeightsRef("local", str(tmp_path / "bvlc_in1k"))


def test_a_spec_reference_is_built_with_its_own_arch():
    with pytest.raises(ValueError, match="alexnet_owt.tv_in1k are weights for alexnet_owt, not alexnet"):
        alexnet(pretrained=resolve_reference("tv_in1k"))
