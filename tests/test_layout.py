"""The package's layout: one architecture table that every option derives from, carried by the
model; imports that point one way."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import alexnet_zoo
from alexnet_zoo import AlexNet, alexnet, alexnet_owt, save_pretrained
from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.models.config import ARCHS, OWT, PAPER


def _arch_options(parser: argparse.ArgumentParser, where: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every ``--arch`` option of ``parser`` and of its subparsers, named by the command path."""
    for action in parser._actions:
        if "--arch" in action.option_strings:
            yield where, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arch_options(sub, f"{where} {name}")


def test_the_arch_table_is_defined_once():
    from alexnet_zoo.benchmarks.imagenet import build_parser as imagenet_parser
    from alexnet_zoo.benchmarks.retrieval import build_parser as retrieval_parser
    from alexnet_zoo.cli.main import build_parser
    from alexnet_zoo.train.args import get_args_parser

    options = [*_arch_options(build_parser(), "alexnet-zoo"), *_arch_options(get_args_parser(), "train"),
               *_arch_options(imagenet_parser(), "benchmarks.imagenet"),
               *_arch_options(retrieval_parser(), "benchmarks.retrieval")]
    where = {w for w, _ in options}
    # the parsers that take a model: a walk that found none of them would prove nothing
    assert {"alexnet-zoo summary", "alexnet-zoo classify", "alexnet-zoo extract", "alexnet-zoo weights convert",
            "train", "benchmarks.imagenet", "benchmarks.retrieval"} <= where
    assert {w: list(a.choices) for w, a in options} == {w: sorted(ARCHS) for w, _ in options}
    assert set(DEFAULT_PREPROCESSING) == set(ARCHS)


# ---- the model carries its architecture's name ----------------------------------------------------

_CUSTOM = PAPER.replace(widths=(48, 128, 192, 192, 128), hidden=64, num_classes=10)  # no builder makes it


def test_the_model_carries_its_arch(tmp_path):
    assert alexnet(num_classes=10).arch == "alexnet"
    assert alexnet_owt(num_classes=10).arch == "alexnet_owt"
    assert AlexNet(OWT.replace(num_classes=10, dropout=0.1)).arch == "alexnet_owt"  # settings are no new layout
    assert AlexNet(_CUSTOM).arch is None
    model = alexnet_owt(num_classes=10)
    with pytest.raises(AttributeError):
        model.arch = "alexnet"  # type: ignore[misc]
    save_pretrained(model, tmp_path / "owt")
    assert alexnet_owt(pretrained=tmp_path / "owt").arch == "alexnet_owt"
    assert model_for_weights(str(tmp_path / "owt")).arch == "alexnet_owt"  # the folder's arch, not the default


def test_a_nameless_variant_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="cannot be saved by name"):
        save_pretrained(AlexNet(_CUSTOM), tmp_path / "custom")
    assert not (tmp_path / "custom").exists()


def test_model_for_weights_follows_a_folder_but_not_a_file(tmp_path):
    """The CLI's resolver is create_model's: a folder names its arch, a file must hold ``arch``."""
    save_pretrained(alexnet_owt(num_classes=10), tmp_path / "owt")
    assert model_for_weights(str(tmp_path / "owt"), arch="alexnet").fc8.out_features == 10
    with pytest.raises(ValueError, match="holds alexnet_owt weights; build it with alexnet_owt"):
        model_for_weights(str(tmp_path / "owt" / "model.safetensors"), arch="alexnet")
    assert model_for_weights("none", arch="alexnet_owt").pretrained_cfg == {}


# ---- imports point one way ------------------------------------------------------------------------

PACKAGE = Path(alexnet_zoo.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("alexnet_zoo", *path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """module -> the package modules it imports (at module level, in functions, under
    TYPE_CHECKING alike), and each (importer, module, name) import of a private name."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    if f"{target}.{alias.name}" in modules:  # a submodule
                        graph[name].add(f"{target}.{alias.name}")
                    elif target in modules:
                        graph[name].add(target)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append((name, target, alias.name))
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or w != v:
                w = stack.pop()
                component.add(w)
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


# What may import what: a module imports modules of a lower rank or of its own package, never higher
# (imports inside functions count: a lazy import cannot hide an edge). retrieval and train share a
# rank and import neither each other; the tools (cli, the published benchmark recipes) share theirs.
RANKS = {"alexnet_zoo.errors": 0, "alexnet_zoo.paths": 0, "alexnet_zoo.devices": 0, "alexnet_zoo.ops": 1,
         "alexnet_zoo.data": 2, "alexnet_zoo.models": 3, "alexnet_zoo.weights": 4, "alexnet_zoo.factory": 5,
         "alexnet_zoo.eval": 6, "alexnet_zoo.deploy": 6, "alexnet_zoo.retrieval": 7, "alexnet_zoo.train": 7,
         "alexnet_zoo.serve": 8, "alexnet_zoo.cli": 9, "alexnet_zoo.benchmarks": 9, "alexnet_zoo": 10}
TOOLS = {"alexnet_zoo.cli", "alexnet_zoo.benchmarks"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _group(module: str) -> str:
    """The layer a module belongs to: its first-level package or foundation module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_the_walk_sees_lazy_imports():
    graph, _ = _imports(_modules())
    assert "alexnet_zoo.weights.convert" in graph["alexnet_zoo.weights.store"]  # inside _from_upstream only
    assert "alexnet_zoo.weights.download" in graph["alexnet_zoo.weights.store"]  # inside cached_spec only
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_every_module_has_a_layer():
    assert sorted(m for m in _modules() if _group(m) not in RANKS) == []


def test_no_import_cycle():
    graph, _ = _imports(_modules())
    assert _cycles(graph) == []


def test_imports_point_one_way():
    graph, _ = _imports(_modules())
    against = []
    for importer, targets in graph.items():
        for target in targets:
            a, b = _group(importer), _group(target)
            if a == b or RANKS[b] < RANKS[a] or (RANKS[a] == RANKS[b] and {a, b} <= TOOLS):
                continue
            against.append(f"{importer} -> {target}")
    assert against == []


def test_no_private_name_is_imported_across_modules():
    _, private = _imports(_modules())
    assert private == []


def test_modules_and_functions_stay_small():
    big = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    big.append(f"{name}.{node.name}: {lines} lines")
    assert big == []


def test_each_package_says_what_it_holds_and_may_import():
    for name, path in _modules().items():
        if path.name == "__init__.py" and name != "alexnet_zoo":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "import" in doc.lower() and len(doc) > 80, f"{name}: its docstring must say what it holds and may import"


def test_the_top_level_names_import_lazily():
    import alexnet_zoo as package

    assert sorted(package.__all__) == sorted(package._MODULE_OF)
    code = ("import sys, alexnet_zoo; loaded = [m for m in ('torch', 'PIL', 'faiss', 'huggingface_hub') "
            "if m in sys.modules]; print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in package.__all__:
        assert getattr(package, name) is not None
    from alexnet_zoo.data.images import load_image
    from alexnet_zoo.retrieval.index import VectorIndex

    assert package.load_image is load_image and package.VectorIndex is VectorIndex
