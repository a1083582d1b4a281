import pytest

from alexnet_zoo.cli.main import main
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import OWT, PAPER
from alexnet_zoo.models.summary import summarize


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


EXAMPLE = __import__("pathlib").Path(__file__).parents[1] / "examples" / "chelsea.png"
IMAGES = __import__("pathlib").Path(__file__).parent / "data" / "images"


def test_classify_reports_each_file_and_goes_on(capsys):
    import json

    files = [str(EXAMPLE), str(IMAGES / "truncated_jpeg.jpg"), str(IMAGES / "pil_sample_cmyk.jpg")]
    code = main(["classify", *files, "--pretrained", "none", "--top", "3", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # one file failed, and the run says so
    assert [r["path"] for r in out] == files
    assert out[1]["error"] and "truncated_jpeg.jpg" in out[1]["error"] and not out[1]["classes"]
    for r in (out[0], out[2]):
        assert r["error"] is None and len(r["classes"]) == 3
        probs = [c["probability"] for c in r["classes"]]
        assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
        assert {"index", "wnid", "name"} <= set(r["classes"][0])


def test_filters_draws_two_towers(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "conv1.png"
    assert main(["filters", "--pretrained", "none", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.mode == "RGB" and img.height > 6 * 44 and img.width == 16 * (44 + 2) + 2


def test_weights_list(capsys):
    import json

    assert main(["weights", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alexnet.bvlc_in1k"]["top1"] == 57.1 and rows["alexnet.bvlc_in1k"]["cached"] is False
