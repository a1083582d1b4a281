"""config.json as untrusted input: every field checked, the weights' shapes compared before anything is built."""

import dataclasses
import json
import math
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import alexnet_zoo.factory as factory
import alexnet_zoo.weights.store as pretrained
from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, Preprocessing
from alexnet_zoo.errors import InvalidConfig, WeightsError
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import _CONFIG_RULES, ARCHS, OWT, PAPER, AlexNetConfig
from alexnet_zoo.weights.config_file import _PREPROCESSING_RULES, MAX_CONFIG_BYTES, read_config_file
from alexnet_zoo.weights.store import Checkpoint, load_checkpoint

SMALL = {"hidden": 16, "num_classes": 3}  # a real folder of 15 MB: the conv layers, tiny fc layers


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return save_pretrained(alexnet(**SMALL), tmp_path_factory.mktemp("small") / "m", preprocessing=BVLC_PREPROCESSING)


@pytest.fixture
def edited(folder, tmp_path):
    """A copy of the folder (weights hard-linked) whose config.json a test rewrites with ``edit(info)``."""
    target = tmp_path / "edited"
    target.mkdir()
    (target / "model.safetensors").hardlink_to(folder / "model.safetensors")

    def write(edit=None, raw: bytes | None = None) -> Path:
        info = json.loads((folder / "config.json").read_text())
        if edit is not None:
            edit(info)
        (target / "config.json").write_bytes(raw if raw is not None else json.dumps(info).encode())
        return target
    return write


@pytest.fixture
def nothing_is_built(monkeypatch):
    """Fail the test if a model is built or a tensor loaded: the refusal must come before either."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built or weights loaded before the config was refused")
    monkeypatch.setattr(pretrained, "load_file", refuse)
    monkeypatch.setattr(pretrained, "AlexNet", refuse)
    monkeypatch.setattr(factory, "AlexNet", refuse)


def _set(section: str, key: str, value):
    def edit(info):
        info[section][key] = value
    return edit


def _top(key: str, value):
    def edit(info):
        info[key] = value
    return edit


HOSTILE = {  # name: (edit of config.json, what the message must say)
    "top-level list": (None, rb"[1, 2]", r"top level must be a JSON object.*got list"),
    "top-level string": (None, rb'"alexnet"', r"top level must be a JSON object"),
    "invalid json": (None, rb"{not json", r"not an alexnet_zoo config.json \(invalid JSON at line 1 column 2"),
    "not utf-8": (None, b'{"architecture": "\xff"}', r"not UTF-8 text at byte 18"),
    "empty file": (None, b"", r"invalid JSON"),
    "deep nesting": (None, b"[" * 50_000 + b"]" * 50_000, r"nested deeper than 32"),
    "extra a list": (_set("config", "extra", [1, [2, {"a": None}]]), None, r"config.extra must be a JSON object"),
    "deep extra": (_set("config", "extra", {"a": json.loads('{"b":' * 40 + "1" + "}" * 40)}), None, "nested deeper"),
    "duplicate key": (None, b'{"architecture": "alexnet", "architecture": "alexnet_owt", "config": {}}',
                      r"the key 'architecture' appears twice"),
    "5000-digit integer": (None, b'{"architecture": "alexnet", "config": {"hidden": 1' + b"0" * 5000 + b"}}",
                           r"4300 digits"),
    "architecture list": (_top("architecture", ["alexnet"]), None, r"unknown architecture \['alexnet'\]; expected one"),
    "architecture unknown": (_top("architecture", "resnet50"), None, r"unknown architecture 'resnet50'"),
    "architecture missing": (lambda info: info.pop("architecture"), None, r"no 'architecture' entry"),
    "config missing": (lambda info: info.pop("config"), None, r"no 'config' entry"),
    "config a list": (_top("config", [1, 2]), None, r"config must be a JSON object of AlexNetConfig fields"),
    "conv1_stride 0": (_set("config", "conv1_stride", 0), None, r"config.conv1_stride must be an integer in \[1, 64\], got 0"),
    "negative width": (_set("config", "widths", [-96, 256, 384, 384, 256]), None, r"config.widths\[0\] must be an integer"),
    "four widths": (_set("config", "widths", [96, 256, 384, 384]), None, r"config.widths must be a list of 5 values"),
    "width as bool": (_set("config", "widths", [True, 256, 384, 384, 256]), None, r"config.widths\[0\].*got True"),
    "width as float": (_set("config", "widths", [96.0, 256, 384, 384, 256]), None, r"config.widths\[0\].*got 96.0"),
    "width as string": (_set("config", "widths", ["96", 256, 384, 384, 256]), None, r"config.widths\[0\].*got '96'"),
    "hidden 300000": (_set("config", "hidden", 300_000), None, r"config.hidden must be an integer in \[1, 65536\]"),
    "huge num_classes": (_set("config", "num_classes", 10**30), None, r"config.num_classes must be an integer in"),
    "negative num_classes": (_set("config", "num_classes", -1), None, r"config.num_classes"),
    "groups 0": (_set("config", "groups", [0, 2, 1, 2, 2]), None, r"config.groups\[0\]"),
    "groups not dividing": (_set("config", "groups", [1, 3, 1, 2, 2]), None, r"config.groups: conv2: groups=3"),
    "zero kernel": (_set("config", "kernels", [0, 5, 3, 3, 3]), None, r"config.kernels\[0\]"),
    "no pool5 at any size": (_set("config", "kernels", [64] * 5), None, r"must leave a pool5 map"),
    "input too small": (_set("config", "input_size", 20), None, r"config.input_size must be large enough"),
    "even lrn_size": (_set("config", "lrn_size", 4), None, r"config.lrn_size must be an integer in \[1, 63\], odd"),
    "lrn_k 0": (_set("config", "lrn_k", 0), None, r"config.lrn_k must be a finite number in \[0.001, "),
    "NaN alpha": (_set("config", "lrn_alpha", float("nan")), None, r"config.lrn_alpha must be a finite number.*nan"),
    "inf beta": (None, b'{"architecture": "alexnet", "config": {"lrn_beta": 1e400}}', r"config.lrn_beta.*got inf"),
    "Infinity constant": (None, b'{"architecture": "alexnet", "config": {"lrn_k": -Infinity}}', r"config.lrn_k"),
    "dropout 1": (_set("config", "dropout", 1.0), None, r"config.dropout must be a finite number in \[0, 1\)"),
    "pool_ceil as int": (_set("config", "pool_ceil", 1), None, r"config.pool_ceil must be true or false, got 1"),
    "lrn as string": (_set("config", "lrn", "false"), None, r"config.lrn must be true or false"),
    "unknown convention": (_set("config", "lrn_convention", "tf"), None,
                           r"config.lrn_convention must be one of 'paper', 'caffe', got 'tf'"),
    "init as number": (_set("config", "init", 1), None, r"config.init must be one of"),
    "unknown config field": (_set("config", "bogus", 1), None, r"unknown AlexNetConfig field\(s\) 'config.bogus'"),
    "std 0": (_set("preprocessing", "std", [0, 1, 1]), None, r"preprocessing.std\[0\] must be a finite number in \[0.0001,"),
    "std of two": (_set("preprocessing", "std", [1, 1]), None, r"preprocessing.std must be a list of 3 values"),
    "mean as strings": (_set("preprocessing", "mean", ["a", "b", "c"]), None, r"preprocessing.mean\[0\]"),
    "scale NaN": (_set("preprocessing", "scale", float("nan")), None, r"preprocessing.scale"),
    "negative resize": (_set("preprocessing", "resize", -256), None, r"preprocessing.resize must be an integer"),
    "crop over resize": (_set("preprocessing", "crop", 300), None, r"preprocessing.crop must be at most"),
    "resize mode": (_set("preprocessing", "resize_mode", "stretch"), None, r"preprocessing.resize_mode must be one of"),
    "preprocessing a list": (_top("preprocessing", [256]), None, r"preprocessing must be a JSON object"),
    "unknown preprocessing field": (_set("preprocessing", "gamma", 2), None, r"'preprocessing.gamma'"),
    "weights a list": (_top("weights", ["x"]), None, r"weights must be a JSON object or null"),
    "weights name a number": (_top("weights", {"name": 3}), None, r"weights.name must be a string"),
    "format": (_top("format", "timm"), None, r"format must be 'alexnet_zoo'"),
    "newer format_version": (_top("format_version", 2), None, r"format_version must be an integer in \[1, 1\]"),
    "format_version as bool": (_top("format_version", True), None, r"format_version must be an integer"),
    "num_classes a string": (_top("num_classes", "3"), None, r"num_classes must be an integer"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_config_is_refused_naming_file_and_field(edited, nothing_is_built, case):
    edit, raw, message = HOSTILE[case]
    target = edited(edit, raw)
    for load in (lambda: load_checkpoint(target), lambda: model_for_weights(str(target))):
        with pytest.raises(InvalidConfig, match=message) as err:
            load()
        assert str(err.value).startswith(f"{target / 'config.json'}: ")
        assert isinstance(err.value, WeightsError)


def test_a_large_hidden_is_compared_with_the_header_before_any_allocation(edited, nothing_is_built):
    """Within its bound a config's layers still must be the file's: fc6 is compared from the
    safetensors header, so a config asking for 14 GB of fc layers costs nothing."""
    target = edited(_set("config", "hidden", 60_000))
    with pytest.raises(WeightsError, match=r"model.safetensors does not fit the alexnet its config.json describes: "
                                           r"fc6.weight is \(16, 9216\), expected \(60000, 9216\)"):
        load_checkpoint(target)


def test_a_header_claiming_what_the_config_claims_is_refused_unread(tmp_path, nothing_is_built):
    """A header that declares (300000, 9216) matching tensors in a file of a few bytes: safetensors
    itself refuses a header its file does not cover, before any tensor exists."""
    config = PAPER.replace(hidden=300_000 // 8, num_classes=2)
    shapes, offset, header = config.parameter_shapes(), 0, {}
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 64)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "alexnet", "config": config.to_dict()}))
    with pytest.raises(WeightsError, match=r"model.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path)


def test_weights_of_another_dtype_or_with_extra_tensors_are_refused(tmp_path, nothing_is_built):
    from safetensors.torch import save_file

    shapes = AlexNetConfig.from_dict(SMALL).parameter_shapes()
    tensors = {k: torch.zeros(s, dtype=torch.int32 if k == "fc7.bias" else torch.float32) for k, s in shapes.items()}
    save_file({**tensors, "extra.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "alexnet", "config": SMALL}))
    with pytest.raises(WeightsError, match=r"extra.weight unexpected; fc7.bias is I32, expected a floating-point"):
        load_checkpoint(tmp_path)


def test_an_oversized_config_is_refused_before_it_is_read(edited, nothing_is_built):
    target = edited()
    with open(target / "config.json", "r+b") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing is written to disk
    with pytest.raises(InvalidConfig, match=r"config.json: larger than 8 MiB"):
        load_checkpoint(target)


def test_a_bom_and_free_form_meta_are_accepted(edited, folder):
    target = edited(lambda info: info.update(classes=["a", "b", "c"], training={"step": 3}, metrics=[]),
                    raw=None)
    text = (target / "config.json").read_bytes()
    (target / "config.json").write_bytes(b"\xef\xbb\xbf" + text)
    checkpoint = load_checkpoint(target)
    assert checkpoint.config == AlexNetConfig.from_dict(SMALL) and checkpoint.preprocessing == BVLC_PREPROCESSING
    assert checkpoint.meta["classes"] == ["a", "b", "c"]
    assert model_for_weights(str(target)).fc8.out_features == 3


def test_converted_weights_that_do_not_fit_their_config_are_refused_before_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("built")
    monkeypatch.setattr(pretrained, "AlexNet", refuse)
    state = {k: torch.zeros(s) for k, s in OWT.parameter_shapes().items()}
    state["fc8.weight"] = torch.zeros(7, 4096)
    checkpoint = Checkpoint("alexnet_owt", OWT, state, None, {"converted_from": "tv.pth"})
    with pytest.raises(WeightsError, match=r"tv.pth does not fit its config: fc8.weight is \(7, 4096\), "
                                           r"expected \(1000, 4096\)"):
        pretrained._model(checkpoint)


def test_every_field_has_a_rule():
    """A field added to a config class without a rule would go unchecked: this names it."""
    assert set(_CONFIG_RULES) == {f.name for f in dataclasses.fields(AlexNetConfig)}
    assert set(_PREPROCESSING_RULES) == {f.name for f in dataclasses.fields(Preprocessing)}


def test_saved_configs_read_back_exactly(folder):
    found = read_config_file(folder / "config.json", architectures=ARCHS)
    assert found.arch == "alexnet" and found.config == AlexNetConfig.from_dict(SMALL)
    assert found.preprocessing == BVLC_PREPROCESSING
    for config in (PAPER, OWT):
        assert AlexNetConfig.from_dict(config.to_dict()) == config


_ints = st.integers


@st.composite
def valid_configs(draw) -> AlexNetConfig:
    """Configs the model can build: channel counts that every group size divides."""
    groups = tuple(draw(st.sampled_from([1, 2])) for _ in range(5))
    in_chans = draw(_ints(1, 4)) * groups[0]
    widths = tuple(draw(_ints(1, 24)) * 2 for _ in range(5))
    return PAPER.replace(widths=widths, groups=groups, in_chans=in_chans,
                         kernels=tuple(draw(_ints(1, 5)) for _ in range(5)),
                         paddings=tuple(draw(_ints(0, 2)) for _ in range(5)), conv1_stride=draw(_ints(1, 4)),
                         hidden=draw(_ints(1, 64)), num_classes=draw(_ints(0, 20)), pool_ceil=draw(st.booleans()),
                         lrn_size=draw(_ints(0, 4)) * 2 + 1, input_size=227)


@settings(max_examples=60, deadline=None)
@given(valid_configs())
def test_parameter_shapes_are_the_models(config):
    with torch.device("meta"):
        model = AlexNet(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == config.parameter_shapes()
    assert AlexNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
