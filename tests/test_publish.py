"""``weights publish`` end to end: the real huggingface_hub client uploads to tests/hub_server.py (create_repo,
preupload, LFS batch + PUT + verify, commit), and ``alexnet(pretrained="hf-hub:...")`` loads the same model back.
Broken folders are refused before any request."""

import json
import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from alexnet_zoo import alexnet, alexnet_owt, save_pretrained
from alexnet_zoo.cli.main import main
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING
from alexnet_zoo.errors import WeightsError
from alexnet_zoo.models.config import OWT
from alexnet_zoo.weights.cards import model_card
from alexnet_zoo.weights.publish import folder_card, publish
from alexnet_zoo.weights.specs import get_weight_spec
from alexnet_zoo.weights.store import load_checkpoint

TOKEN = "hf_local_write_token"
METRICS = [{"top1": 91.5, "top5": 99.25, "dataset": "flowers-10 val", "protocol": "centre crop 227",
            "source": "our fine-tuning run"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders in our format: fine-tuned weights (10 classes, no spec) and weights named as a spec's."""
    root = tmp_path_factory.mktemp("publish")
    torch.manual_seed(0)
    finetuned = alexnet(lrn_convention="caffe", lrn_k=1.0, num_classes=10)
    save_pretrained(finetuned, root / "finetuned", preprocessing=BVLC_PREPROCESSING,
                    meta={"metrics": METRICS, "license": "CC-BY-4.0", "description": "AlexNet fine-tuned on flowers."})
    spec = get_weight_spec("alexnet.bvlc_in1k")
    save_pretrained(alexnet(**spec.config), root / "bvlc", spec=spec)
    return {"finetuned": root / "finetuned", "bvlc": root / "bvlc"}


@pytest.fixture
def hub(hub_server, monkeypatch):
    """The local Hub, accepting writes with one token, which the client finds in HF_TOKEN."""
    hub_server.write_token = TOKEN
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub_server


def assert_same_weights(model, folder):
    stored = load_checkpoint(folder)
    assert model.config == stored.config
    assert model.state_dict().keys() == stored.state_dict.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.state_dict.items())


def test_publish_then_load_back_is_the_same_model(hub, folders):
    folder, repo = folders["finetuned"], "me/alexnet-flowers"
    url = publish(folder, repo, commit_message="Fine-tuned on flowers")
    commit = hub.commits[-1]
    assert url == f"{hub.url}/{repo}/commit/{commit.oid}" and commit.summary == "Fine-tuned on flowers"
    files = hub.repo_files(repo)
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    for name in ("model.safetensors", "config.json"):
        assert files[name].data == (folder / name).read_bytes()
    assert files["model.safetensors"].lfs and not files["config.json"].lfs  # LFS batch + PUT, and inline
    assert [r.host for r in hub.requests if r.method == "PUT"] == ["cdn"]
    assert files["README.md"].data.decode() == folder_card(folder, repo)

    model = alexnet(pretrained=f"hf-hub:{repo}")  # same config and tensors: the same model
    assert_same_weights(model, folder)
    assert model.preprocessing == BVLC_PREPROCESSING and model.fc8.out_features == 10

    # publishing the same folder again uploads nothing and makes no commit
    before = len(hub.commits)
    assert publish(folder, repo) == url
    assert len(hub.commits) == before and len([r for r in hub.requests if r.method == "PUT"]) == 1


def test_the_folder_card_has_metrics_licence_and_usage(folders, tmp_path):
    card = folder_card(folders["finetuned"], "me/alexnet-flowers")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "alexnet_zoo" and front["license"] == "other"
    assert "# me/alexnet-flowers" in card and "AlexNet fine-tuned on flowers." in card
    assert 'model = alexnet(pretrained="hf-hub:me/alexnet-flowers").eval()' in card
    assert "| 91.500 | 99.250 | flowers-10 val | centre crop 227 | our fine-tuning run |" in card
    assert "## Licence\n\nCC-BY-4.0\n" in card
    assert "10 outputs" in card and "overrides: lrn_k=1.0, lrn_convention='caffe'." in card
    assert "| channels | BGR, values 0-255 |" in card and "Krizhevsky" in card
    # a folder that records nothing says so rather than inventing it
    save_pretrained(alexnet_owt(num_classes=3), tmp_path)
    card = folder_card(tmp_path, "me/bare")
    assert "No accuracy is recorded" in card and "Not recorded in config.json" in card
    assert 'alexnet_owt(pretrained="hf-hub:me/bare")' in card and "none recorded: alexnet_owt's default" in card


def test_a_spec_card_loads_with_the_spec_arch():
    card = model_card(get_weight_spec("alexnet_owt.tv_in1k"), "me/tv")
    assert 'model = alexnet_owt(pretrained="hf-hub:me/tv").eval()' in card


def _link_weights(source, target):
    os.link(source / "model.safetensors", target / "model.safetensors")


def _config(source, target, **changes):
    info = json.loads((source / "config.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            info[section][field] = value
        else:
            info[section] = value
    (target / "config.json").write_text(json.dumps(info))


def _nan(source, target):
    tensors = load_file(str(source / "model.safetensors"))
    tensors["fc8.bias"][3] = float("nan")
    save_file(tensors, str(target / "model.safetensors"))
    shutil.copy(source / "config.json", target)


BROKEN = {
    "not a folder": (lambda s, t: t.rmdir(), "not a folder"),
    "no weights": (lambda s, t: shutil.copy(s / "config.json", t), "model.safetensors missing"),
    "no config": (_link_weights, "config.json missing"),
    "config not json": (lambda s, t: (_link_weights(s, t), (t / "config.json").write_text("{not json")),
                        "not an alexnet_zoo config.json"),
    "unknown architecture": (lambda s, t: (_link_weights(s, t), _config(s, t, architecture="resnet50")),
                             "unknown architecture 'resnet50'"),
    "bad config value": (lambda s, t: (_link_weights(s, t), _config(s, t, config__lrn_convention="tf")),
                         "lrn_convention must be"),
    "truncated weights": (lambda s, t: ((t / "model.safetensors").write_bytes(
        (s / "model.safetensors").read_bytes()[:4096]), shutil.copy(s / "config.json", t)),
        "not a readable safetensors file"),
    "another architecture": (lambda s, t: (_link_weights(s, t), _config(s, t, architecture="alexnet_owt",
                                                                         config=OWT.to_dict())),
                             r"does not fit the alexnet_owt .*conv1.weight is \(96, 3, 11, 11\), expected \(64, 3"),
    "classes disagree": (lambda s, t: (_link_weights(s, t), _config(s, t, config__num_classes=1000)),
                         r"fc8.weight is \(10, 4096\), expected \(1000, 4096\)"),
    "missing tensors": (lambda s, t: (save_file({"conv1.weight": torch.zeros(96, 3, 11, 11)},
                                                str(t / "model.safetensors")), shutil.copy(s / "config.json", t)),
                        "conv1.bias missing; conv2.weight missing"),
    "NaN weights": (_nan, "NaN or inf values in fc8.bias"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_folder_is_refused_before_any_request(hub, folders, tmp_path, case):
    make, message = BROKEN[case]
    target = tmp_path / "broken"
    target.mkdir()
    make(folders["finetuned"], target)
    with pytest.raises(WeightsError, match=message) as err:
        publish(target, "me/broken")
    assert str(target) in str(err.value)
    assert hub.requests == []


@pytest.mark.parametrize("spec, message", [
    ("alexnet.bvlc_in1k", r"holds alexnet with 56,909,194 parameters.*card would describe other weights"),
    ("alexnet.nope", "no pretrained weights named 'alexnet.nope'"),
])
def test_a_spec_that_cannot_describe_the_weights_is_refused(hub, folders, spec, message):
    with pytest.raises(WeightsError, match=message):
        publish(folders["finetuned"], "me/flowers", spec=spec)
    with pytest.raises(ValueError, match="expected 'org/name'"):
        publish(folders["finetuned"], "no-namespace")
    assert hub.requests == []


def test_without_a_write_token_the_error_says_how_to_log_in(hub, folders, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(WeightsError, match=r"(?s)hf-hub:me/flowers: publishing .*401.*hf auth login"):
        publish(folders["finetuned"], "me/flowers")
    assert hub.commits == []


def test_cli_publishes_a_spec_folder_with_the_spec_card(hub, folders, capsys):
    folder, repo = folders["bvlc"], "zoo/alexnet-bvlc"
    assert main(["weights", "publish", str(folder), "--repo", repo, "--revision", "v1", "--private",
                 "--commit-message", "BVLC weights"]) == 0
    commit = hub.commits[-1]
    assert capsys.readouterr().out.strip() == f"{folder} -> hf-hub:{repo}: {hub.url}/{repo}/commit/{commit.oid}"
    assert (commit.revision, commit.summary) == ("v1", "BVLC weights") and hub.is_private(repo)
    assert sorted(hub.repo_files(repo, "main")) == [".gitattributes"]  # the branch got the commit, not main
    assert hub.repo_files(repo, "v1")["README.md"].data.decode() == model_card(get_weight_spec("alexnet.bvlc_in1k"),
                                                                                repo)
    assert_same_weights(alexnet(pretrained=f"hf-hub:{repo}@v1"), folder)


def test_cli_dry_run_and_errors_send_nothing(hub, folders, tmp_path, capsys):
    assert main(["weights", "publish", str(folders["finetuned"]), "--repo", "me/flowers", "--dry-run"]) == 0
    assert capsys.readouterr().out == folder_card(folders["finetuned"], "me/flowers")
    assert main(["weights", "publish", str(tmp_path), "--repo", "me/flowers"]) == 2
    assert f"{tmp_path}: model.safetensors and config.json missing" in capsys.readouterr().err
    assert hub.requests == []


def test_a_folder_that_no_longer_fits_the_spec_it_names_gets_its_own_card(hub, tmp_path):
    """Fine-tuned from alexnet.bvlc_in1k to 10 classes: config.json still names the spec it started from, and the
    card must describe these weights (from config.json), not claim the spec's ImageNet results."""
    spec = get_weight_spec("alexnet.bvlc_in1k")
    save_pretrained(alexnet(**spec.config, num_classes=10), tmp_path, spec=spec)
    assert json.loads((tmp_path / "config.json").read_text())["weights"]["name"] == spec.name
    card = folder_card(tmp_path, "me/flowers")
    assert card != model_card(spec, "me/flowers") and "# me/flowers" in card
    assert "started from alexnet_zoo's `alexnet.bvlc_in1k` (whose published results are for those weights" in card
    assert "No accuracy is recorded" in card and "57.100" not in card and "10 outputs" in card
    publish(tmp_path, "me/flowers")
    assert hub.repo_files("me/flowers")["README.md"].data.decode() == card
    with pytest.raises(WeightsError, match="card would describe other weights"):  # asked for by name: refused
        publish(tmp_path, "me/flowers", spec="bvlc_in1k")
