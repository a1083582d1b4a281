"""hubconf.py: ``torch.hub.load`` on this repository builds the package's models, with or without weights."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch

from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo.models.config import OWT, PAPER

REPO = Path(__file__).parents[1]


def test_entry_points_are_the_builders():
    model = torch.hub.load(str(REPO), "alexnet", source="local", pretrained=False)
    assert model.config == PAPER and sum(p.numel() for p in model.parameters()) == 60_965_224
    owt = torch.hub.load(str(REPO), "alexnet_owt", source="local", num_classes=10)
    assert owt.config == OWT.replace(num_classes=10)


def test_hubconf_lists_two_entry_points_and_importable_dependencies():
    """What torch.hub.list and its dependency check see (both only take GitHub repos, not folders)."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")] == \
        ["alexnet", "alexnet_owt"]
    assert "two towers" in hubconf.alexnet.__doc__
    assert [name for name in hubconf.dependencies if importlib.util.find_spec(name) is None] == []


def test_pretrained_from_a_local_folder(tmp_path):
    saved = alexnet(lrn_convention="caffe", lrn_k=1.0, num_classes=5)
    save_pretrained(saved, tmp_path)
    model = torch.hub.load(str(REPO), "alexnet", source="local", pretrained=str(tmp_path))
    assert model.config == saved.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values(), strict=True))


def test_an_uninstalled_checkout_loads_and_runs(tmp_path):
    """From another folder, with nothing on PYTHONPATH: the package comes from beside hubconf.py, and the model
    still runs after torch.hub has restored sys.path (plain torch path: no kernel to compile here)."""
    script = (f"import torch; m = torch.hub.load({str(REPO)!r}, 'alexnet', source='local', pretrained=False).eval()\n"
              "import alexnet_zoo; print(alexnet_zoo.__file__)\n"
              "with torch.inference_mode(): print(tuple(m(torch.randn(1, 3, 227, 227)).shape))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"ALEXNET_ZOO_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split("\n")
    assert out[:2] == [str(REPO / "alexnet_zoo" / "__init__.py"), "(1, 1000)"]
