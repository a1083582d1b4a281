import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from numpy_reference import alexnet_forward

from alexnet_zoo import AlexNetConfig, alexnet, alexnet_owt, load_torchvision_state_dict
from alexnet_zoo.models.alexnet import LAYERS
from alexnet_zoo.models.config import feature_sizes


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("size", [227, 224])
def test_whole_network_matches_numpy_reference(path, size):
    model = alexnet().eval()
    x = torch.randn(2, 3, size, size) * 60  # mean-subtracted 0-255 pixels: LRN is far from identity
    with torch.inference_mode():
        ours = model.extract(x, ("conv5", "pool5", "fc6", "fc7", "fc8"))
    params = {k: v.numpy() for k, v in model.state_dict().items()}
    ref = alexnet_forward(params, x.double().numpy())
    for layer in ("conv5", "pool5", "fc6", "fc7", "fc8"):
        assert rel_err(ours[layer], ref[layer]) <= 1e-4, layer
    with torch.inference_mode():
        assert rel_err(model(x), ref["fc8"]) <= 1e-4


def test_caffe_lrn_convention_matches_numpy_reference(path):
    model = alexnet(lrn_convention="caffe", lrn_k=1.0).eval()
    x = torch.randn(1, 3, 227, 227) * 60
    with torch.inference_mode():
        ours = model(x)
    ref = alexnet_forward({k: v.numpy() for k, v in model.state_dict().items()}, x.double().numpy(),
                          lrn_k=1.0, lrn_alpha=1e-4 / 5)
    assert rel_err(ours, ref["fc8"]) <= 1e-4


def test_parameter_names_shapes_and_counts():
    model = alexnet()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (96, 3, 11, 11)
    assert shapes["conv2.weight"] == (256, 48, 5, 5)
    assert shapes["conv3.weight"] == (384, 256, 3, 3)
    assert shapes["conv4.weight"] == (384, 192, 3, 3)
    assert shapes["conv5.weight"] == (256, 192, 3, 3)
    assert shapes["fc6.weight"] == (4096, 9216)
    assert list(shapes) == [f"{layer}.{p}" for layer in LAYERS if layer != "pool5" for p in ("weight", "bias")]
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    assert sum(p.numel() for p in alexnet(groups=(1, 1, 1, 1, 1)).parameters()) == 62_378_344
    assert sum(p.numel() for p in alexnet_owt().parameters()) == 61_100_840
    assert sum(p.numel() for p in alexnet(num_classes=10).parameters()) == 60_965_224 - 4_097_000 + 40_970


@pytest.mark.parametrize("size", [63, 100, 224, 227, 256, 320])
@pytest.mark.parametrize("build", [alexnet, alexnet_owt])
def test_output_shapes_across_input_sizes(path, build, size):
    model = build().eval()
    x = torch.randn(2, 3, size, size + 7)
    with torch.inference_mode():
        assert model.forward_features(x).shape == (2, 256, 6, 6)
        assert model(x).shape == (2, 1000)


def test_pool5_is_6x6_at_224_and_227_without_adaptation():
    for size in (224, 227):
        assert feature_sizes(alexnet().config, size)["pool5"] == 6
    assert feature_sizes(alexnet().config, 227)["conv1"] == 55
    assert feature_sizes(alexnet_owt().config, 224)["pool5"] == 6


def test_too_small_or_wrong_input_is_a_clear_error():
    model = alexnet().eval()
    assert model.min_input_size <= 63
    with pytest.raises(ValueError, match=r"at least \d+x\d+"):
        model(torch.randn(1, 3, model.min_input_size - 1, 100))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 227, 227))


def test_grouped_conv_equals_two_half_convolutions():
    conv = alexnet().conv2
    x = torch.randn(2, 96, 27, 27)
    w1, w2 = conv.weight.chunk(2)
    b1, b2 = conv.bias.chunk(2)
    towers = torch.cat([F.conv2d(x[:, :48], w1, b1, padding=2), F.conv2d(x[:, 48:], w2, b2, padding=2)], 1)
    assert torch.allclose(conv(x), towers, atol=1e-5)


def test_owt_equals_torchvision(path):
    reference = torchvision.models.alexnet().eval()
    model = load_torchvision_state_dict(alexnet_owt().eval(), reference.state_dict())
    x = torch.randn(3, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-5)
        assert torch.allclose(model.forward_features(x), reference.avgpool(reference.features(x)), atol=1e-5)


def test_torchvision_mapping_refuses_mismatches():
    sd = torchvision.models.alexnet().state_dict()
    with pytest.raises(ValueError, match="features.0.weight"):
        load_torchvision_state_dict(alexnet(), sd)  # the two-tower shapes differ
    with pytest.raises(KeyError, match="lacks"):
        load_torchvision_state_dict(alexnet_owt(), {k: v for k, v in sd.items() if not k.startswith("classifier.6")})
    with pytest.raises(KeyError, match="unexpected key"):
        load_torchvision_state_dict(alexnet_owt(), {**sd, "features.1.weight": torch.zeros(1)})


@pytest.mark.parametrize("build", [alexnet, alexnet_owt])
def test_backward_reaches_every_parameter(build):
    model = build(num_classes=10).train()
    loss = F.cross_entropy(model(torch.randn(2, 3, 227, 227) * 50), torch.tensor([1, 7]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_dense_form_equals_model_and_gives_score_maps(path):
    model = alexnet().eval()
    dense = model.to_dense()
    x = torch.randn(2, 3, 227, 227) * 50
    with torch.inference_mode():
        scores = dense(x)
        assert scores.shape == (2, 1000, 1, 1)
        assert torch.allclose(scores.flatten(1), model(x), rtol=1e-4, atol=1e-4)
        big = dense(torch.randn(1, 3, 291, 323) * 50)
    assert big.shape == (1, 1000, 3, 4)  # (291-227)/32 + 1 = 3, (323-227)/32 + 1 = 4
    assert sum(p.numel() for p in dense.parameters()) == 60_965_224  # shares, never copies


def test_extract_layers_and_relu_switch(path):
    model = alexnet().eval()
    x = torch.randn(2, 3, 227, 227) * 50
    with torch.inference_mode():
        feats = model.extract(x, LAYERS)
        pre = model.extract(x, ("conv1", "fc6", "fc7"), relu=False)
        logits = model(x)
        fc7 = model.forward_head(model.forward_features(x), pre_logits=True)
    expected = {"conv1": (96, 55, 55), "conv2": (256, 27, 27), "conv3": (384, 13, 13), "conv4": (384, 13, 13),
                "conv5": (256, 13, 13), "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected
    assert torch.allclose(feats["fc8"], logits, rtol=1e-4, atol=1e-4)
    assert torch.allclose(feats["fc7"], fc7, rtol=1e-4, atol=1e-5)
    assert (feats["fc7"] >= 0).all() and (pre["fc7"] < 0).any()
    assert torch.allclose(pre["fc7"].relu(), feats["fc7"], rtol=1e-4, atol=1e-5)
    assert list(model.extract(x, ("conv1",))) == ["conv1"]
    with pytest.raises(ValueError, match="unknown layer"):
        model.extract(x, ("fc9",))


def test_fast_cpu_path_equals_plain_path(monkeypatch):
    model = alexnet().eval()
    x = torch.randn(4, 3, 227, 227) * 50
    with torch.inference_mode():
        fast = model(x)
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    with torch.inference_mode():
        plain = model(x)
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-4)
    # the packed-weight cache follows in-place weight changes
    with torch.no_grad():
        model.conv3.weight.mul_(0.5)
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "1")
    with torch.inference_mode():
        changed = model(x)
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    with torch.inference_mode():
        assert torch.allclose(changed, model(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(changed, fast)


def test_bf16_autocast_close_to_fp32():
    model = alexnet().eval()
    x = torch.randn(4, 3, 227, 227) * 50
    with torch.inference_mode():
        fp32 = model.forward_head(model.forward_features(x), pre_logits=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.forward_head(model.forward_features(x), pre_logits=True)
    assert bf16.dtype == torch.bfloat16
    assert F.cosine_similarity(bf16.float(), fp32).min() > 0.99


def test_paper_and_caffe_initialisation():
    model = alexnet()
    assert abs(model.conv3.weight.std().item() - 0.01) < 5e-4 and abs(model.fc6.weight.std().item() - 0.01) < 1e-4
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert torch.all(getattr(model, name).bias == 1.0), name
    for name in ("conv1", "conv3", "fc8"):
        assert torch.all(getattr(model, name).bias == 0.0), name
    caffe = alexnet(init="caffe")
    assert abs(caffe.fc7.weight.std().item() - 0.005) < 1e-4 and torch.all(caffe.fc6.bias == 0.1)


def test_reset_classifier_and_config_round_trip():
    model = alexnet()
    model.reset_classifier(10)
    assert model.fc8.out_features == 10 and model.config.num_classes == 10
    model.reset_classifier(0)
    with torch.inference_mode():
        assert model.eval()(torch.randn(1, 3, 227, 227)).shape == (1, model.num_features)
    cfg = alexnet(lrn_convention="caffe", lrn_k=1.0).config
    assert AlexNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="lrn_kk"):
        alexnet(lrn_kk=1)
    with pytest.raises(ValueError, match="groups"):
        alexnet(groups=(1, 3, 1, 2, 2))


def test_pretrained_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = alexnet().eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    again = alexnet(pretrained=tmp_path).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="pretrained"):
        alexnet(pretrained="no-such-weights")
