"""The command line under bad input and a hostile machine: every expected failure is one line
``alexnet-zoo ...: error: ...`` on stderr naming the file and what was expected, exit status 2 (1:
classify finished but skipped unreadable files), never a traceback; a bug keeps its traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import alexnet_zoo.cli.main as cli
from alexnet_zoo import alexnet, save_pretrained
from alexnet_zoo.cli.main import main
from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.devices import resolve_device

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "chelsea.png"
IMAGES = Path(__file__).parent / "data" / "images"
WNIDS = [c.wnid for c in imagenet_categories()]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) as a shell sees it: (exit status, stdout, stderr); argparse's refusals included."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, prog: str) -> str:
    """The single ``PROG: error: ...`` line of ``err`` (argparse may print its usage above it)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def subprocess_cli(*args: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``python -m alexnet_zoo.cli ARGS`` in a fresh interpreter; ``limit_file_bytes`` caps the size of
    any file it writes (RLIMIT_FSIZE), so a write fails as on a full disk."""
    prelude = ""
    if limit_file_bytes is not None:
        prelude = (f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                   f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_file_bytes}, {limit_file_bytes})); ")
    code = f"{prelude}import sys; from alexnet_zoo.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(alexnet(), tmp_path_factory.mktemp("weights") / "random")


# ---- files: missing, unwritable, damaged, a full disk ----------------------------------------------

def test_unwritable_outputs_name_the_file(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    (tmp_path / "folder.png").mkdir()
    for out, reason in ((blocker / "conv1.png", "Not a directory"), (tmp_path / "folder.png", "Is a directory"),
                        (tmp_path / "missing" / "conv1.png", "No such file or directory"),
                        (tmp_path / "conv1", "expected a picture file name ending in .png")):
        code, _, err = run(["filters", "--pretrained", "none", "--out", str(out)], capsys)
        line = one_error_line(err, "alexnet-zoo filters")
        assert code == 2 and str(out) in line and reason in line, line


def test_export_and_quantize_refuse_an_out_of_the_wrong_kind_before_any_work(tmp_path, capsys, monkeypatch):
    """export writes one file and quantize a folder: the other kind is refused in one line, before
    weights are loaded or pictures calibrated on (here: none could be)."""
    import alexnet_zoo.factory as factory

    monkeypatch.setattr(factory, "model_for_weights", lambda *a, **k: pytest.fail("loaded weights first"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x\n")
    code, _, err = run(["export", "--pretrained", "none", "--format", "onnx", "--out", str(tmp_path / "folder")],
                       capsys)
    line = one_error_line(err, "alexnet-zoo export")
    assert code == 2 and "is a folder" in line and str(tmp_path / "folder" / "alexnet.onnx") in line, line
    code, _, err = run(["quantize", "--pretrained", "none", "--calibration", str(tmp_path / "nowhere"), "--out",
                        str(tmp_path / "file")], capsys)
    line = one_error_line(err, "alexnet-zoo quantize")
    assert code == 2 and "exists and is not a folder" in line and str(tmp_path / "file") in line, line


def test_damaged_weights_file_is_named(tmp_path, capsys):
    folder = save_pretrained(alexnet(num_classes=4, hidden=64), tmp_path / "w")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken!")
    code, _, err = run(["classify", str(EXAMPLE), "--pretrained", str(folder)], capsys)
    assert code == 2 and str(folder / "model.safetensors") in one_error_line(err, "alexnet-zoo classify")


def test_full_disk_while_converting_is_one_line(weights, tmp_path):
    """A real failed write (the file-size limit makes the kernel refuse it, as a full disk does),
    in a subprocess: safetensors' own error type must not escape as a traceback."""
    out = tmp_path / "converted"
    done = subprocess_cli("weights", "convert", str(weights), "--arch", "alexnet", "--out", str(out),
                          limit_file_bytes=1 << 20)
    line = one_error_line(done.stderr, "alexnet-zoo weights convert")
    assert done.returncode == 2 and str(out / "model.safetensors") in line and "could not be written" in line
    assert not (out / "model.safetensors").exists()  # nothing half-written is left under the name


def test_unreadable_images_are_listed_one_line_each(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture\n")
    missing = tmp_path / "gone.png"
    done = subprocess_cli("classify", str(EXAMPLE), str(text), str(missing), str(IMAGES / "truncated_jpeg.jpg"),
                          "--pretrained", "none", "--top", "2", "--device", "cpu")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("alexnet-zoo classify: error: ") for line in lines)
    for path, reason, line in zip((text, missing, IMAGES / "truncated_jpeg.jpg"),
                                  ("not an image", "no such file", "cannot decode"), lines):
        assert str(path) in line and reason in line, line
    assert done.stdout.startswith(str(EXAMPLE)) and str(text) not in done.stdout


def test_weights_convert_of_a_missing_file_says_what_it_accepts(tmp_path, capsys):
    for source, reason in ((tmp_path / "nope.onnx", "no such file or folder"),
                           (tmp_path, "a folder without model.safetensors"),
                           (ROOT / "README.md", "not a weight file this converts")):
        code, _, err = run(["weights", "convert", str(source), "--arch", "alexnet", "--out", str(tmp_path / "o")],
                           capsys)
        line = one_error_line(err, "alexnet-zoo weights convert")
        assert code == 2 and str(source) in line and reason in line and ".caffemodel" in line
        assert "True/False" not in line


def test_unknown_weight_name_is_one_line(capsys):
    code, _, err = run(["weights", "download", "no_such_weights"], capsys)
    assert code == 2 and "no_such_weights" in one_error_line(err, "alexnet-zoo weights download")


def test_a_bug_keeps_its_traceback(monkeypatch):
    """KeyError, TypeError and friends are bugs, not user errors: the CLI must not turn them into
    an error line (it used to catch KeyError)."""
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "format_table", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["summary"])


# ---- numbers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,expected", [
    (["classify", str(EXAMPLE), "--top", "0"], "argument --top: expected a whole number >= 1, got 0"),
    (["classify", str(EXAMPLE), "--top", "-3"], "argument --top: expected a whole number >= 1, got -3"),
    (["classify", str(EXAMPLE), "--top", "five"], "argument --top: expected a whole number >= 1, got 'five'"),
    (["classify", str(EXAMPLE), "--batch-size", "0"], "argument --batch-size: expected a whole number >= 1"),
    (["classify", str(EXAMPLE), "--crops", "3"], "argument --crops: expected 1 (the centre crop) or 10"),
    (["summary", "--input", "0"], "argument --input: expected a whole number >= 1, got 0"),
    (["summary", "--num-classes", "-1"], "argument --num-classes: expected a whole number >= 0"),
    (["evaluate", "--data", ".", "--batch-size", "0"], "argument --batch-size: expected a whole number >= 1"),
    (["evaluate", "--data", ".", "--workers", "-1"], "argument --workers: expected a whole number >= 0"),
    (["evaluate", "--data", ".", "--worker-niceness", "20"], "expected a whole number from 0 to 19, got 20"),
    (["evaluate", "--data", ".", "--limit", "0"], "argument --limit: expected a whole number >= 1, got 0"),
    (["evaluate", "--data", ".", "--protocol", "dense", "--scales", "256", "0"], "argument --scales: expected a "
                                                                                 "whole number from 1 to 2048"),
    (["evaluate", "--data", ".", "--protocol", "dense", "--scales", "100000"], "from 1 to 2048, got 100000"),
])
def test_numbers_are_checked_where_they_are_parsed(argv, expected, capsys):
    code, out, err = run([*argv, "--pretrained", "none"], capsys)
    line = one_error_line(err, f"alexnet-zoo {argv[0]}")
    assert code == 2 and expected in line and not out, line


def test_top_beyond_the_model_classes(capsys):
    code, out, err = run(["classify", str(EXAMPLE), "--pretrained", "none", "--top", "2000"], capsys)
    line = one_error_line(err, "alexnet-zoo classify")
    assert code == 2 and "--top 2000: the model has 1000 classes; expected a number from 1 to 1000" in line
    assert not out


def test_dense_scale_below_the_crop(tmp_path, capsys):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / f"{WNIDS[0]}_1.png")
    code, _, err = run(["evaluate", "--data", str(tmp_path), "--pretrained", "none", "--protocol", "dense",
                        "--scales", "100", "--workers", "0", "--no-progress"], capsys)
    line = one_error_line(err, "alexnet-zoo evaluate")
    assert code == 2 and "dense scale 100" in line and "crop (227)" in line


# ---- devices -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["classify", str(EXAMPLE)], ["evaluate", "--data", "."]])
def test_cuda_without_a_gpu_is_a_clear_error(command, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run([*command, "--pretrained", "none", "--device", "cuda"], capsys)
    line = one_error_line(err, f"alexnet-zoo {command[0]}")
    assert code == 2 and "device 'cuda'" in line and "available here: cpu" in line


def test_device_names_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="there are 1 CUDA GPU"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")


def test_mps_is_accepted_wherever_cuda_is(monkeypatch, capsys):
    import alexnet_zoo.devices as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps") and resolve_device("auto") == torch.device("mps")
    for command in (["classify", str(EXAMPLE)], ["evaluate", "--data", "."]):
        args = cli.build_parser().parse_args([*command, "--device", "mps"])
        assert args.device == torch.device("mps")


def test_library_evaluate_checks_its_device(tmp_path, monkeypatch):
    from alexnet_zoo.eval.loop import dataset_for, evaluate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = alexnet(num_classes=4, hidden=64)
    with pytest.raises(ValueError, match="device 'cuda'"):
        evaluate(model, dataset_for([], model, "center"), device="cuda", progress=False)


# ---- a trained model's class ids travel with it --------------------------------------------------

def test_a_trained_model_names_its_classes_in_classify_and_evaluate(tmp_path, capsys):
    """train exports final/ with config.json's "classes" (its WNID folders): classify prints those
    WNIDs and their words, not bare indices, evaluate maps the data's ImageNet labels onto them;
    class ids that are not WNIDs are printed as they are."""
    from alexnet_zoo.train.run import main as train

    wnids = [WNIDS[7], WNIDS[300], WNIDS[999]]
    for split in ("train", "val"):
        for i, wnid in enumerate(wnids):
            (tmp_path / "data" / split / wnid).mkdir(parents=True)
            Image.new("RGB", (80, 80), (80 * i, 40, 200 - 50 * i)).save(tmp_path / "data" / split / wnid / "a.png")
    result = train(["--data", str(tmp_path / "data"), "--image-size", "72", "--crop-size", "67", "-b", "3",
                    "--epochs", "1", "--model-config", "hidden=64", "--workers", "0", "--no-progress",
                    "--output-dir", str(tmp_path / "run")])
    final = Path(result["final"])
    capsys.readouterr()  # the training run's own lines
    assert json.loads((final / "config.json").read_text())["classes"] == wnids
    code, out, _ = run(["classify", str(EXAMPLE), "--pretrained", str(final), "--top", "3", "--json"], capsys)
    classes = json.loads(out)[0]["classes"]
    names = {c.wnid: c.name for c in imagenet_categories()}
    assert code == 0 and sorted(c["wnid"] for c in classes) == wnids
    assert all(c["name"] == names[c["wnid"]] and c["wnid"] == wnids[c["index"]] for c in classes)
    code, out, _ = run(["classify", str(EXAMPLE), "--pretrained", str(final), "--top", "1"], capsys)
    assert code == 0 and any(f"{w} {names[w]}" in out for w in wnids)

    (tmp_path / "data" / "val" / WNIDS[5]).mkdir()  # a class the model was not trained on: left out, said so
    Image.new("RGB", (80, 80), (1, 2, 3)).save(tmp_path / "data" / "val" / WNIDS[5] / "b.png")
    code, out, _ = run(["evaluate", "--data", str(tmp_path / "data" / "val"), "--pretrained", str(final),
                        "--workers", "0", "--no-progress", "--json", str(tmp_path / "report.json")], capsys)
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0 and report["images"] == 3 and report["data"]["other_classes"] == 1 and "not trained on" in out
    assert [row["wnid"] for row in report["per_class"]] == wnids and report["top5"] == 1.0

    other = tmp_path / "pets"  # class ids of another kind: shown as recorded
    save_pretrained(alexnet(num_classes=2, hidden=64), other, meta={"classes": ["cat", "dog"]})
    code, out, _ = run(["classify", str(EXAMPLE), "--pretrained", str(other), "--top", "2", "--json"], capsys)
    assert code == 0 and sorted(c["name"] for c in json.loads(out)[0]["classes"]) == ["cat", "dog"]


# ---- help texts ----------------------------------------------------------------------------------

def _description(help_text: str) -> str:
    """The paragraph argparse prints between the usage and the first list of arguments."""
    paragraphs = [" ".join(p.split()) for p in help_text.split("\n\n")]
    return paragraphs[1] if len(paragraphs) > 1 and not paragraphs[1].endswith(":") else ""


def _subcommands(parser, path=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from _subcommands(sub, (*path, name))


def test_every_subcommand_help_is_a_full_description(capsys):
    commands = [c for c in _subcommands(cli.build_parser()) if c != ("train",)]
    assert {("evaluate",), ("classify",), ("weights", "convert"), ("index", "query")} <= set(commands)
    for command in [(), *commands]:
        code, out, err = run([*command, "--help"], capsys)
        text = _description(out)
        assert code == 0 and not err and text.endswith(".") and len(text) > 20 and "``" not in text, (command, text)
    assert "nothing more;" not in run(["--help"], capsys)[1]


ENTRY_POINTS = [[sys.executable, "-m", "alexnet_zoo.cli"], [sys.executable, "-m", "alexnet_zoo.cli", "train"],
                [sys.executable, "-m", "alexnet_zoo.benchmarks.imagenet"], [sys.executable, "-m", "alexnet_zoo.train"],
                *([sys.executable, str(p.relative_to(ROOT))] for p in sorted((ROOT / "benchmarks").glob("*.py"))
                  if not p.name.startswith("_"))]  # _environment.py: shared by the scripts, not one


def test_every_entry_point_help_ends_with_a_full_sentence():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [(cmd, subprocess.Popen([*cmd, "--help"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)) for cmd in ENTRY_POINTS]
    assert len(runs) >= 9
    for cmd, proc in runs:
        out, err = proc.communicate(timeout=600)
        text = _description(out)
        assert proc.returncode == 0 and "Traceback" not in err, (cmd, err)
        assert text.endswith(".") and len(text) > 20, (cmd, text)
