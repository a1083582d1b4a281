"""Our weights format, the builders' pretrained= argument, weight specs and model cards."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnet_zoo import alexnet, alexnet_owt, get_weight_spec, list_pretrained, save_pretrained
from alexnet_zoo.errors import WeightsError
from alexnet_zoo.model_card import model_card
from alexnet_zoo.transforms import BVLC_PREPROCESSING

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
    with pytest.raises(KeyError, match="available"):
        get_weight_spec("alexnet.nope")


@pytest.mark.parametrize("name", ["alexnet.bvlc_in1k", "alexnet_owt.tv_in1k"])
def test_committed_model_cards_are_current(name):
    card = WEIGHTS_DIR / name / "README.md"
    assert card.read_text() == model_card(get_weight_spec(name)), \
        f"regenerate with: python -m alexnet_zoo.model_card {name} > {card}"
