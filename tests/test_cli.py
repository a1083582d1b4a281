import pytest

from alexnet_zoo.cli import main
from alexnet_zoo.config import OWT, PAPER
from alexnet_zoo.model import AlexNet
from alexnet_zoo.summary import summarize


def test_summary_table_totals(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out and "724,406,816" in out and "96x55x55" in out and "256x6x6" in out
    assert main(["summary", "--arch", "alexnet_owt", "--input", "224"]) == 0
    out = capsys.readouterr().out
    assert "61,100,840" in out and "64x55x55" in out


@pytest.mark.parametrize("config,size", [(PAPER, 227), (PAPER, 224), (PAPER, 300), (OWT, 224)])
def test_summary_rows_match_real_model(config, size):
    import torch

    rows = {r.name: r for r in summarize(config, size)}
    model = AlexNet(config).eval()
    with torch.inference_mode():
        feats = model.extract(torch.randn(1, 3, size, size), ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"))
    for name, act in feats.items():
        assert rows[name].shape == tuple(act.shape[1:]), name
    for name, module in model.named_children():
        assert rows[name].params == sum(p.numel() for p in module.parameters()), name


def test_summary_too_small_is_an_error(capsys):
    assert main(["summary", "--input", "40"]) == 2
    assert "too small" in capsys.readouterr().err
