"""Every shell command in README.md and docs/ is checked, so the docs cannot drift from the code.

Each command of a ``sh`` block, and each ``python`` snippet, is covered by one rule below, or this
test fails and says which:

* ``run``: it needs no network, GPU or ImageNet: it runs for real, in bash, in a scratch folder whose
  ``examples/``, ``tests/`` and ``benchmarks/`` are the repository's, on tiny inputs put where the
  command expects them (a rule may rewrite a path the user would change anyway, such as ``~/photos``,
  or append options that make a benchmark short, and says so);
* ``parse``: it needs data or hardware we do not have (ImageNet, GPUs, the Hub): its arguments are
  parsed by the real entry point's parser (which checks every number, choice and device), and nothing
  runs;
* ``skip``: not ours to run here (the install and test commands, which ``.ci/run`` runs), with a reason.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens, a connection is refused at once


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regex the whole command (comments stripped, continuation lines joined) matches
    mode: str  # run | parse | skip
    why: str = ""  # for skip: the reason; for run: what was substituted
    rewrite: tuple[tuple[str, str], ...] = ()  # for run and parse: literal replacements
    append: str = ""  # for run: options added at the end
    expect: int = 0  # for run: the exit status
    expect_stderr: str = ""  # for run: a phrase stderr must hold


PHOTOS = (("~/photos", "photos"),)
VAL = (("~/ILSVRC2012/val_by_class", "val_by_class"), ("~/ILSVRC2012/val", "val"),
       ("../shared/data/imagenet_labels/ILSVRC2012_val_caffe_labels.txt", "val_labels.txt"),
       ("../shared/data/imagenet_samples", "samples"))
IMAGENET = (("/data/imagenet256", "imagenet"), ("/data/imagenet", "imagenet"))

RULES = [
    Rule(r'pip install -e "\.\[test\]"', "skip", ".ci/run runs the README's install command"),
    Rule(r"python -m pytest", "skip", ".ci/run runs the README's test command"),
    # README: the main job, offline: it must fail at once and say how to bring the weights in
    Rule(r"alexnet-zoo classify examples/chelsea\.png", "run", "the Hub is a closed port here",
         expect=2, expect_stderr="weights convert"),
    Rule(r"alexnet-zoo classify examples/chelsea\.png --pretrained none", "run"),
    Rule(r"python -c \"from alexnet_zoo import alexnet, save_pretrained; save_pretrained\(alexnet\(\), 'my-weights'\)\"", "run"),
    Rule(r"alexnet-zoo classify examples/chelsea\.png --pretrained my-weights", "run"),
    Rule(r"alexnet-zoo weights convert bvlcalexnet-8\.onnx --arch alexnet --out bvlc", "run",
         "bvlcalexnet-8.onnx is the ONNX model zoo's graph with random weights"),
    Rule(r"python -m alexnet_zoo\.train --data /data/imagenet.*", "parse", "a GPU device named is parsed as cpu here",
         rewrite=(*IMAGENET, ("cuda:0,cuda:1", "cpu,cpu"))),
    Rule(r"python -m alexnet_zoo\.train\.pack .*", "parse", rewrite=IMAGENET),
    Rule(r"torchrun .* -m alexnet_zoo\.train .*", "parse", rewrite=IMAGENET),
    Rule(r"python -m alexnet_zoo\.train --data demo .*", "parse", rewrite=(("demo", "imagenet"),)),
    Rule(r"mkdir -p demo && for split in train val; do .*", "skip", "builds the demo from ../shared/data (shell loop)"),
    Rule(r"w=\$\(basename .*", "skip", "the second line of the demo's shell loop"),
    Rule(r"alexnet-zoo evaluate --data ~/ILSVRC2012/val --labels ILSVRC2012_val_caffe_labels\.txt .*", "run",
         "a flat folder of 4 pictures and its val.txt-style labels; random weights",
         rewrite=(*VAL, ("ILSVRC2012_val_caffe_labels.txt", "val_labels.txt")), append="--pretrained none"),
    Rule(r"python -m alexnet_zoo\.benchmarks\.imagenet --data \.\./shared/data/imagenet_samples --limit 50", "run",
         "4 WNID-named pictures; random weights", rewrite=VAL, append="--pretrained none"),
    Rule(r"python -m alexnet_zoo\.benchmarks\.imagenet .*", "parse", rewrite=VAL),
    Rule(r"python -m alexnet_zoo\.benchmarks\.retrieval --dataset .*", "parse",
         "the datasets and the default weights are not here"),
    Rule(r"alexnet-zoo evaluate .*", "parse", rewrite=VAL),
    # README: features and search on 6 small pictures with local random weights
    Rule(r"alexnet-zoo extract ~/photos --out feats --layer fc7", "run", "6 pictures; local random weights",
         rewrite=PHOTOS, append="--pretrained my-weights"),
    Rule(r"alexnet-zoo index build feats --out photos\.index --kind auto", "run"),
    Rule(r"alexnet-zoo index query photos\.index query\.jpg -k 10 --grid neighbours\.png", "run",
         "local weights are named, as a local index needs", append="--pretrained my-weights"),
    Rule(r"alexnet-zoo index dedupe photos\.index --threshold 0\.95 --json", "run"),
    Rule(r"alexnet-zoo extract photos/ --out feats --pretrained bvlc_in1k .*", "parse"),
    Rule(r"alexnet-zoo index build feats --out photos\.index --kind auto --memory 4GB", "parse"),
    Rule(r"alexnet-zoo index (query|dedupe) photos\.index .*", "parse"),
    Rule(r"alexnet-zoo index build feats --out photos\.index --pca .*", "parse"),
    Rule(r"alexnet-zoo index (add|remove) photos\.index .*", "parse"),
    # README and docs/serve.md: a server runs until stopped, so its commands are parsed; the refusal runs
    Rule(r'pip install -e "\.\[serve\]"', "skip", "the serve extra is in .[test], which .ci/run installs"),
    Rule(r"alexnet-zoo serve photos\.index --host 0\.0\.0\.0", "run", "refused before anything loads", expect=2,
         expect_stderr="--no-auth"),
    Rule(r"alexnet-zoo serve photos\.index.*", "parse"),
    Rule(r"python:\nfrom alexnet_zoo\.serve\.app import create_app\n", "run", "the README's index and local weights"),
    # docs/retrieval.md: the grid walkthrough, as written
    Rule(r"python -c \"import torch; from alexnet_zoo import alexnet; .*save_pretrained\(alexnet\(\), 'grid/random-seed0'\)\"", "run"),
    Rule(r"python - <<'EOF'.*", "run"),
    Rule(r"alexnet-zoo extract grid/pics .*", "run"),
    Rule(r"alexnet-zoo index build grid/feats .*", "run"),
    Rule(r"alexnet-zoo index query grid/pics\.index .*", "run"),
    # docs/retrieval.md: near-duplicate groups and calibration on the grid's pictures and copies, as written
    Rule(r"python benchmarks/dedupe\.py --data tests/data/retrieval .*", "run"),
    Rule(r"alexnet-zoo extract grid/dupes .*", "run"),
    Rule(r"alexnet-zoo index build grid/dupes\.feats .*", "run"),
    Rule(r"alexnet-zoo index dedupe grid/dupes\.index .*", "run"),
    # docs/benchmarks.md: fc7 of the 1,000 sample-derived pictures (needs ../shared's samples)
    Rule(r"alexnet-zoo extract dupes --out dupes\.feats .*", "parse"),
    # benchmarks: the short one runs with one round at batch 1, the rest are parsed
    Rule(r"python benchmarks/throughput\.py --json docs/throughput\.json", "run", "one round at batch 1",
         append="--rounds 1 --batch-sizes 1"),
    Rule(r"python benchmarks/\w+\.py.*", "parse"),
    # docs/benchmarks.md: faiss-gpu carried to an offline GPU machine; needs the network and a GPU machine
    Rule(r"pip wheel --no-deps -w wheelhouse \.", "skip", "builds this package's wheel to carry; .ci/run installs it"),
    Rule(r"pip download -d wheelhouse faiss-gpu==1\.15\.1", "skip", "downloads 788 MB of wheels (the network)"),
    Rule(r"pip uninstall -y faiss-cpu", "skip", "would remove the faiss the tests use; on the GPU machine only"),
    Rule(r"pip install --no-index --find-links wheelhouse (--no-deps alexnet-zoo|faiss-gpu==1\.15\.1)", "skip",
         "on the offline GPU machine, from the carried folder"),
    Rule(r"ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/\w+\.py.*", "parse",
         "the caps apply at torch's import; the arguments are parsed here",
         rewrite=(("ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 ", ""),)),
    Rule(r"FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/\w+\.py.*",
         "parse", "the caps (fbgemm's too) apply at torch's import; the arguments are parsed here",
         rewrite=(("FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 ", ""),)),
    # docs/deploy.md and docs/benchmarks.md: the sample-trained weights (13 CPU minutes: parsed)
    Rule(r"python -m alexnet_zoo\.train --train-dir runs/samples\d+ .*", "parse"),
    Rule(r"alexnet-zoo quantize --pretrained runs/train200/final .*", "parse"),
    Rule(r"alexnet-zoo weights publish .*", "parse", "the synopsis with its [optional] parts given",
         rewrite=(("[", ""), ("]", ""))),
    # docs/deploy.md and the README: exports of the README's local random weights run; downloads are parsed
    Rule(r"alexnet-zoo export --pretrained my-weights --format (onnx|torchscript) --out alexnet\.(onnx|pt)", "run"),
    Rule(r"alexnet-zoo export (--arch alexnet_owt )?--pretrained (bvlc|tv)_in1k .*", "parse"),
    # docs/deploy.md: int8 of the README's local random weights, calibrated on the committed pictures
    Rule(r"alexnet-zoo quantize --pretrained my-weights --calibration tests/data/retrieval --out my-weights-int8", "run"),
    Rule(r"alexnet-zoo classify examples/chelsea\.png --pretrained my-weights-int8 --precision int8", "run"),
    Rule(r"alexnet-zoo quantize --pretrained bvlc_in1k .*", "parse", "ImageNet and BVLC's weights are not here"),
    Rule(r"python:\nfrom alexnet_zoo import alexnet\nfrom alexnet_zoo\.deploy\.onnx_graph import export_onnx\n", "run"),
    Rule(r"python:\nimport json\n\nimport numpy as np\nimport onnxruntime as ort\n", "run",
         "reads the alexnet.onnx the export above wrote"),
    # Python snippets run as written, with local weights in place of downloads
    Rule(r"python:\nfrom alexnet_zoo import alexnet\nmodel = alexnet\(\)\.eval\(\)", "run"),
    Rule(r"python:\nfrom alexnet_zoo import alexnet, alexnet_owt, load_image\n", "run",
         "local weights for the downloads", rewrite=(('alexnet(pretrained=True)', 'alexnet(pretrained="my-weights")'),
                                                     ('alexnet_owt(pretrained=True)', 'alexnet_owt(pretrained="owt-weights")'))),
    Rule(r"python:\nimport torch\nfrom alexnet_zoo import alexnet\n\nmodel = alexnet\(\)\.eval\(\)\ndense", "run"),
    Rule(r"python:\nimport torch\nfrom alexnet_zoo import local_response_norm", "run"),
    Rule(r"python:\nimport torch\nimport torch\.nn\.functional as F\nfrom alexnet_zoo import alexnet\n\nm = alexnet\(\)", "run"),
    Rule(r"python:\nimport torch, torchvision\nfrom alexnet_zoo import alexnet_owt, load_torchvision_state_dict", "run"),
    Rule(r"python:\nimport torch\nfrom alexnet_zoo import alexnet\n\nmodel = alexnet\(\)\.eval\(\)\nx = ", "run"),
    Rule(r"python:\nfrom alexnet_zoo import alexnet, save_pretrained\nmodel = alexnet\(pretrained=True, num_classes=102\)", "run",
         "local weights for the download; the Hub line is left out",
         rewrite=(('alexnet(pretrained=True, num_classes=102)', 'alexnet(pretrained="my-weights", num_classes=102)'),
                  ('model = alexnet(pretrained="hf-hub:me/alexnet-flowers")', 'pass  #'))),
]


def doc_commands() -> list[tuple[str, str]]:
    """(``file:line``, command) for every command of every sh/bash block: comments stripped,
    backslash continuations joined, a here-document kept whole with its body."""
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        inside, i = False, 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("```"):
                if not inside and line[3:].strip() == "python":  # a snippet: kept whole
                    end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                    found.append((f"{doc.relative_to(ROOT)}:{i + 2}", "python:\n" + "\n".join(lines[i + 1:end])))
                    i = end + 1
                    continue
                inside = not inside and line[3:].strip() in ("sh", "bash", "shell")
                i += 1
                continue
            if not inside or not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            start, text = i + 1, _strip_comment(line)
            while text.endswith("\\"):
                i += 1
                text = text[:-1].rstrip() + " " + _strip_comment(lines[i]).strip()
            heredoc = re.search(r"<<'(\w+)'", text)
            if heredoc:
                body = []
                while lines[i + 1].strip() != heredoc.group(1):
                    i += 1
                    body.append(lines[i])
                i += 1
                text = "\n".join([text, *body, heredoc.group(1)])
            found.append((f"{doc.relative_to(ROOT)}:{start}", text.strip()))
            i += 1
    return found


def _strip_comment(line: str) -> str:
    """The line without a trailing ``  # comment`` (a # outside quotes after whitespace)."""
    quote = None
    for j, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and j > 0 and line[j - 1].isspace():
            return line[:j].rstrip()
    return line.rstrip()


def rule_for(command: str) -> Rule | None:
    """The first rule whose pattern matches the whole command (a Python snippet: its beginning)."""
    if command.startswith("python:\n"):
        return next((r for r in RULES if r.pattern.startswith("python:") and re.match(r.pattern, command)), None)
    return next((r for r in RULES if re.fullmatch(r.pattern, command, re.S)), None)


COMMANDS = doc_commands()


def test_every_doc_command_is_covered():
    missing = [f"{where}: {cmd.splitlines()[0] if cmd.startswith('python:') else cmd}"
               for where, cmd in COMMANDS if rule_for(cmd) is None]
    assert not missing, "commands in the docs that no rule of tests/test_docs.py covers:\n" + "\n".join(missing)
    assert len(COMMANDS) > 30  # the reader found the blocks
    unused = [r.pattern for r in RULES if not any(rule_for(c) is r for _, c in COMMANDS)]
    assert not unused, f"rules for commands the docs no longer have: {unused}"


# ---- parse: the real parser of each entry point, nothing run ----------------------------------

class _Parsed(BaseException):
    """Raised by the patched parse_args once the arguments parsed: the command stops there."""


def _rewrite(command: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for old, new in pairs:
        command = command.replace(old, new)
    return command


def _entry(tokens: list[str]) -> tuple[str, str, list[str]]:
    """(kind, target, args) of a command: the console script, ``python -m``, a script, torchrun."""
    if tokens[0] == "alexnet-zoo":
        return "cli", "alexnet_zoo.cli", tokens[1:]
    if tokens[0] == "torchrun":
        at = tokens.index("-m")
        return "module", tokens[at + 1], tokens[at + 2:]
    assert tokens[0] == "python", tokens
    if tokens[1] == "-m":
        return "module", tokens[2], tokens[3:]
    return "script", str(ROOT / tokens[1]), tokens[2:]


PARSED = [(w, c) for w, c in COMMANDS if (r := rule_for(c)) is not None and r.mode == "parse"]


@pytest.mark.parametrize(("where", "command"), PARSED, ids=[w for w, _ in PARSED])
def test_documented_arguments_parse(where, command, tmp_path, monkeypatch, capsys):
    rule = rule_for(command)
    tokens = shlex.split(_rewrite(command, rule.rewrite))
    for folder in ("imagenet", "val", "val_by_class", "samples", "feats", "photos", "alexnet-flowers"):
        (tmp_path / folder).mkdir()
    (tmp_path / "val_labels.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    kind, target, args = _entry(tokens)
    monkeypatch.setattr(sys, "argv", [target, *args])
    with pytest.raises(_Parsed):
        try:
            if kind == "cli":
                from alexnet_zoo.cli.main import main

                main(args)
            elif kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                monkeypatch.syspath_prepend(str(Path(target).parent))  # as `python script.py` puts it first
                runpy.run_path(target, run_name="__main__")
        except SystemExit as exit:
            pytest.fail(f"{where}: the documented arguments do not parse (exit {exit.code}):\n"
                        f"{command}\n{capsys.readouterr().err}")


# ---- run: for real, in bash, on tiny inputs ---------------------------------------------------

RUN = [(w, c) for w, c in COMMANDS if (r := rule_for(c)) is not None and r.mode == "run"]


def _scratch(root: Path) -> None:
    """A folder laid out as the docs expect: the repository's examples/, tests/ and benchmarks/,
    an empty docs/ for outputs, and tiny pictures wherever a command reads some."""
    for name in ("examples", "tests", "benchmarks"):
        (root / name).symlink_to(ROOT / name)
    (root / "docs").mkdir()
    chelsea = Image.open(ROOT / "examples" / "chelsea.png").convert("RGB")
    photos = root / "photos"
    photos.mkdir()
    for i, angle in enumerate((0, 90, 180, 270, 45, 10)):
        chelsea.rotate(angle, expand=True).resize((160 + 16 * i, 120 + 8 * i)).save(photos / f"p{i}.jpg")
    chelsea.resize((200, 150)).save(root / "query.jpg")
    val, samples = root / "val", root / "samples"
    val.mkdir()
    samples.mkdir()
    wnids = ["n01440764", "n01443537", "n02123045", "n04589890"]  # classes 0, 1, 281, 904
    labels = []
    for i, wnid in enumerate(wnids):
        picture = chelsea.rotate(30 * i).resize((180, 140))
        picture.save(val / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        picture.save(samples / f"{wnid}_sample{i}.JPEG")
        labels.append(f"ILSVRC2012_val_{i + 1:08d}.JPEG {[0, 1, 281, 904][i]}")
    (root / "val_labels.txt").write_text("\n".join(labels) + "\n")
    from alexnet_zoo import alexnet_owt, save_pretrained

    save_pretrained(alexnet_owt(), root / "owt-weights")


def _bvlc_onnx(path: Path) -> None:
    """The ONNX model zoo's bvlcalexnet graph (as the converter tests build it), random weights."""
    import onnx
    from test_convert import bvlc_graph

    from alexnet_zoo import alexnet

    weights = {k: v.numpy() for k, v in alexnet().state_dict().items()}
    onnx.save_model(bvlc_graph(weights), str(path))


def test_documented_commands_run(tmp_path):
    """In document order (later commands use what earlier ones made), each with its rule's inputs."""
    root = tmp_path / "work"
    root.mkdir()
    _scratch(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALEXNET_ZOO_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": CLOSED_PORT, "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    if shutil.which("alexnet-zoo", path=env["PATH"]) is None:  # not installed: the module stands in
        shim = tmp_path / "bin" / "alexnet-zoo"
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m alexnet_zoo.cli "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    for where, command in RUN:
        rule = rule_for(command)
        text = _rewrite(command, rule.rewrite) + (f" {rule.append}" if rule.append else "")
        if "bvlcalexnet-8.onnx" in text:
            _bvlc_onnx(root / "bvlcalexnet-8.onnx")
        if text.startswith("python:\n"):
            argv = [sys.executable, "-c", text.removeprefix("python:\n")]
        else:
            argv = ["bash", "-c", text]
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        context = f"{where}: {text}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
        assert done.returncode == rule.expect, context
        assert "Traceback" not in done.stderr, context
        if rule.expect_stderr:
            assert rule.expect_stderr in done.stderr, context
    for made in ("my-weights/model.safetensors", "bvlc/model.safetensors", "ten.json", "feats", "photos.index",
                 "neighbours.png", "grid/pics.index", "docs/retrieval_grid.png", "docs/throughput.json"):
        assert (root / made).exists(), f"{made} was not written"
