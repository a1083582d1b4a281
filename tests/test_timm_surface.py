"""A timm user's surface: num_classes, get_classifier, pretrained_cfg / default_cfg, feature_info,
features_only - each through a real forward pass on a small batch."""

import json

import pytest
import torch
from torch import nn

from alexnet_zoo import AlexNet, AlexNetFeatures, PretrainedCfg, alexnet, alexnet_owt, create_model, save_pretrained
from alexnet_zoo.models.config import feature_sizes


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(2, 3, 227, 227)


def test_num_classes_and_get_classifier_follow_fc8(images):
    model = alexnet_owt(num_classes=10).eval()
    assert model.num_classes == 10 and model.get_classifier() is model.fc8
    with torch.no_grad():
        assert model(images).shape == (2, 10)
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        assert model(images).shape == (2, model.num_features)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5


def test_a_random_model_has_a_typed_cfg_that_records_no_weights():
    model = alexnet()
    cfg = model.pretrained_cfg
    assert isinstance(cfg, PretrainedCfg) and model.default_cfg == cfg
    assert cfg.architecture == "alexnet" and cfg.num_classes == 1000 and cfg.input_size == (3, 227, 227)
    assert cfg.channel_order == "BGR" and cfg.crop_mode == "squash" and cfg.interpolation == "bilinear"
    assert cfg.mean == pytest.approx(tuple(m / 255 for m in model.preprocessing.mean))
    assert cfg.crop_pct == pytest.approx(227 / 256)
    assert cfg == {} and not cfg and cfg.get("weights") is None  # the recorded document: none
    owt = alexnet_owt().pretrained_cfg
    assert owt.mean == pytest.approx((0.485, 0.456, 0.406)) and owt.crop_mode == "center"
    assert owt.input_size == (3, 224, 224) and owt.crop_pct == pytest.approx(224 / 256)
    assert AlexNet().pretrained_cfg.mean is None  # built directly: no preprocessing known


def test_a_pretrained_folder_gives_a_typed_cfg_that_round_trips(tmp_path, images):
    save_pretrained(alexnet(), tmp_path)
    model = alexnet(pretrained=tmp_path).eval()
    cfg = model.pretrained_cfg
    assert isinstance(cfg, PretrainedCfg) and model.default_cfg == cfg
    assert cfg.architecture == "alexnet" and cfg.num_classes == 1000 and cfg.input_size == (3, 227, 227)
    # as a mapping, the config.json document the weights came with (what callers read today)
    assert cfg["architecture"] == "alexnet" and cfg.get("num_classes") == 1000 and cfg.meta == dict(cfg)
    assert json.loads((tmp_path / "config.json").read_text()) == dict(cfg)
    data = cfg.to_dict()
    assert PretrainedCfg.from_dict(data) == cfg
    assert PretrainedCfg.from_dict(json.loads(json.dumps(data))) == cfg
    with pytest.raises(AttributeError):
        cfg.num_classes = 3  # frozen
    with torch.no_grad():
        assert model(images).shape == (2, cfg.num_classes)
    tuned = alexnet(pretrained=tmp_path, num_classes=7)
    assert tuned.num_classes == 7 and tuned.pretrained_cfg.num_classes == 1000  # the weights' classes


@pytest.mark.parametrize("build", [alexnet, alexnet_owt])
def test_features_only_maps_match_feature_info(build, images):
    model = build().eval()
    info = model.feature_info
    assert [d["module"] for d in info] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert [d["num_chs"] for d in info] == [*model.config.widths, model.config.hidden, model.config.hidden]
    assert [d["reduction"] for d in info] == [4, 8, 16, 16, 16, 32, 32]
    features = AlexNetFeatures(model, out_indices=range(7))
    assert features.model is model  # wraps the network, no copy
    with torch.no_grad():
        maps = features(images)
        direct = model.extract(images, [d["module"] for d in info])
    sizes = feature_sizes(model.config, 227)
    for out, d in zip(maps, info, strict=True):
        assert out.shape[:2] == (2, d["num_chs"])
        torch.testing.assert_close(out, direct[d["module"]])
        if out.dim() == 4:
            side = sizes[d["module"]]
            assert out.shape[-2:] == (side, side) and side <= 227 / d["reduction"] < side + 2


def test_features_only_through_the_builders(tmp_path, images):
    features = alexnet(features_only=True)
    assert isinstance(features, AlexNetFeatures) and features.out_indices == (0, 1, 2, 3, 4)
    assert features.feature_info.channels() == [96, 256, 384, 384, 256]
    assert features.feature_info.reduction() == [4, 8, 16, 16, 16]
    assert features.feature_info.module_name() == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    with torch.no_grad():
        assert [tuple(m.shape) for m in features.eval()(images)] == [
            (2, 96, 55, 55), (2, 256, 27, 27), (2, 384, 13, 13), (2, 384, 13, 13), (2, 256, 13, 13)]
    last = create_model("alexnet_owt", features_only=True, out_indices=(-1, 4, 2))
    assert last.out_indices == (2, 4, 6) and last.feature_info.module_name() == ["conv3", "conv5", "fc7"]
    with torch.no_grad():
        assert [tuple(m.shape) for m in last.eval()(images)] == [(2, 384, 13, 13), (2, 256, 13, 13), (2, 4096)]
    assert create_model("alexnet", features_only=True, out_indices=2).feature_info.module_name() == ["fc6", "fc7"]
    save_pretrained(alexnet(), tmp_path)
    loaded = alexnet(pretrained=tmp_path, features_only=True, out_indices=(1,)).eval()
    plain = alexnet(pretrained=tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], plain.extract(images, ["conv2"])["conv2"])
    with pytest.raises(ValueError, match="outside the 7 features"):
        alexnet(features_only=True, out_indices=(7,))
    with pytest.raises(ValueError, match="features_only"):
        alexnet(out_indices=(1,))
