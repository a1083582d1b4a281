"""Property-based fuzzing of the parsers we wrote ourselves: config.json, the Caffe protobuf reader,
label files (Caffe val.txt, CSV) and synset lists. Any bytes in: a valid result or the parser's
typed error out, never another exception, never memory out of proportion to the input.

Budgets are bounded (``max_examples``) so CI spends a few seconds per test; the strategies are
structure-aware (valid files, then mutated) as well as raw bytes, so the fuzzer reaches past the
first length check."""

import csv
import io
import json
import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alexnet_zoo.data.categories import MAX_CLASSES, parse_synset_words
from alexnet_zoo.data.datasets import from_label_file
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING
from alexnet_zoo.errors import ConversionError, InvalidConfig, LabelFileError, WeightsError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import ARCHS, OWT, AlexNetConfig
from alexnet_zoo.weights.config_file import check_weights_fit, read_config_file
from alexnet_zoo.weights.convert import from_caffe
from alexnet_zoo.weights.convert.from_caffe import convert_caffemodel

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- protobuf, written independently of the reader -------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64: ten-byte two's complement, as protobuf writes them
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


@st.composite
def blobs(draw) -> tuple[bytes, tuple[int, ...], np.ndarray]:
    """A BlobProto in one of the encodings Caffe writes: (bytes, the shape it declares, its values)."""
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    double = draw(st.booleans())
    values = np.array(draw(st.lists(st.floats(width=32, allow_nan=False), min_size=math.prod(shape),
                                    max_size=math.prod(shape))), "<f8" if double else "<f4")
    if draw(st.booleans()):  # BlobShape, dims packed or one per record
        dims = b"".join(varint(d) for d in shape)
        body = ld(7, ld(1, dims) if draw(st.booleans()) else b"".join(key(1, 0) + varint(d) for d in shape))
    else:  # legacy num/channels/height/width, always four
        shape = (1,) * (4 - len(shape)) + shape
        body = b"".join(key(i + 1, 0) + varint(d) for i, d in enumerate(shape))
    field, wire = (8, 1) if double else (5, 5)
    if draw(st.booleans()):
        body += ld(field, values.tobytes())
    else:
        body += b"".join(key(field, wire) + v.tobytes() for v in values)
    return body, shape, values


@st.composite
def nets(draw) -> tuple[bytes, list[tuple[str, str | int, list]]]:
    """A NetParameter of V2 / V1 / V0 layers, and what each layer holds."""
    out, expected = b"", []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["conv1", "fc8", "relu1", ""]) | st.text(max_size=8))
        fmt = draw(st.sampled_from(["layer", "layers", "layers.layer"]))
        kind: str | int = draw(st.integers(0, 40)) if fmt == "layers" else draw(st.sampled_from(["Convolution", "ReLU"]))
        layer_blobs = draw(st.lists(blobs(), max_size=2))
        raw = [b for b, _, _ in layer_blobs]
        if fmt == "layer":
            body = ld(1, name.encode()) + ld(2, kind.encode()) + b"".join(ld(7, b) for b in raw)
            out += ld(100, body)
        elif fmt == "layers":
            body = ld(4, name.encode()) + key(5, 0) + varint(kind) + b"".join(ld(6, b) for b in raw)
            out += ld(2, body)
        else:
            v0 = ld(1, name.encode()) + ld(2, kind.encode()) + b"".join(ld(50, b) for b in raw)
            out += ld(2, ld(1, v0))
        if draw(st.booleans()):  # a field the reader skips: the prototxt's other settings
            out += ld(draw(st.integers(3, 99)), draw(st.binary(max_size=8)))
        expected.append((name, kind, fmt, [(s, v) for _, s, v in layer_blobs]))
    return out, expected


@FUZZ
@given(nets())
def test_caffe_reader_reads_back_what_was_written(net):
    data, expected = net
    layers = from_caffe._layers(memoryview(data))
    assert [(layer.name, layer.type, layer.format) for layer in layers] == [e[:3] for e in expected]
    for layer, (_, _, _, want) in zip(layers, expected):
        assert [b.shape for b in layer.blobs] == [s for s, _ in want]
        for blob, (_, values) in zip(layer.blobs, want):
            assert np.array_equal(blob.data, values)


def _convert(tmp: Path, data: bytes) -> None:
    """convert_caffemodel on ``data``: ConversionError is the only way it may fail (small nets can't
    succeed: BVLC's shapes are needed), and what it allocates stays in proportion to the file."""
    path = tmp / "net.caffemodel"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ConversionError, match=re.escape(str(path))):
            convert_caffemodel(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * len(data) + (8 << 20)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz")
    (path / "warm.caffemodel").write_bytes(b"")
    with pytest.raises(ConversionError):  # lazy imports and the first meta model are not the parser's memory
        convert_caffemodel(path / "warm.caffemodel")
    return path


_mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=11)),
    st.tuples(st.just("huge length"), st.integers(0, 1 << 16), st.sampled_from([2**31, 2**63 - 1, 2**64 - 1, 2**70])))


def _mutate(data: bytes, mutation: tuple) -> bytes:
    kind, at = mutation[0], mutation[1] % (len(data) + 1)
    if kind == "truncate":
        return data[:at]
    if kind == "flip" and data:
        at %= len(data)
        return data[:at] + bytes([data[at] ^ mutation[2]]) + data[at + 1:]
    if kind == "insert":
        return data[:at] + mutation[2] + data[at:]
    return data[:at] + varint(mutation[2]) + data[at:]  # a length or dim that claims far more than the file


@FUZZ
@given(nets(), st.lists(_mutations, max_size=3))
@example((ld(100, ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, ld(7, ld(1, varint(-5) + varint(2**63))))), []), [])
@example((ld(100, ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, ld(7, key(1, 5) + b"\0\0\0\0"))), []), [])
@example((ld(100, ld(1, b"conv1") + key(2, 5) + b"abcd"), []), [])
@example((ld(100, ld(1, b"conv1") + ld(7, ld(7, ld(1, varint(2**32) * 2)))), []), [])  # prod wraps in int64
def test_a_mutated_caffemodel_is_a_conversion_error(tmp, net, mutations):
    data = net[0]
    for mutation in mutations:
        data = _mutate(data, mutation)
    _convert(tmp, data)


@FUZZ
@given(st.binary(max_size=512))
@example(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # an 11-byte varint
@example(ld(100, b"") + b"\xa2\x06\xff\xff\xff\xff\x0f")  # a length of 4 GB in a 10-byte file
@example(b"".join(ld(2, b"") for _ in range(50)) + (b"\x12\x7f" * 200))  # nested claims, none complete
def test_random_bytes_are_a_conversion_error(tmp, data):
    _convert(tmp, data)


def test_deep_nesting_is_read_without_recursion(tmp):
    """Unknown submessages are skipped as spans, never descended: 100,000 levels cost one pass."""
    prefixes, length = [], 0
    for _ in range(100_000):
        prefixes.append(key(90, 2) + varint(length))
        length += len(prefixes[-1])
    _convert(tmp, ld(100, ld(1, b"conv1") + b"".join(reversed(prefixes))))


@pytest.mark.parametrize("data, message", [
    (ld(100, ld(1, b"conv1") + key(2, 5) + b"abcd"), r"a layer type at byte 10 has wire type 5"),
    (ld(100, ld(1, b"conv1") + ld(7, ld(7, key(1, 5) + b"\0\0\0\0"))), r"BlobShape.dim at byte 14 has wire type 5"),
    (ld(100, ld(1, b"conv1") + ld(2, b"Convolution") + ld(7, ld(7, ld(1, varint(-5) + varint(3))))
     + ld(7, b"")), r"declares shape \(-5, 3\) but holds 0 values"),
])
def test_caffe_wire_confusions_are_named(tmp, data, message):
    """A fixed32 where a varint belongs was read as its byte offset ("has type 11"); a negative
    int64 dim printed as 18446744073709551611."""
    path = tmp / "wire.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=message):
        convert_caffemodel(path)


# ---- config.json -----------------------------------------------------------------------------------

def _json_values():
    scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
               | st.text(max_size=6))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                                                 inner, max_size=3),
                        max_leaves=8)


_EDGES = st.sampled_from([0, -1, 1, 2, 3, 5, 64, 65, 1 << 16, 1 << 20, 2**63, True, False, 0.0, 0.5, 1.0, -0.0,
                          float("nan"), float("inf"), "paper", "caffe", "squash", "BGR", "", [], {}, None,
                          [1, 1, 1], [0, 1, 1], [96, 256, 384, 384, 256], [1, 2, 1, 2, 2], [3, 3, 3, 3, 3]])


@st.composite
def config_documents(draw) -> dict:
    """save_pretrained's config.json, then edited: fields replaced by edge values or arbitrary
    JSON, removed, or added."""
    arch = draw(st.sampled_from(sorted(ARCHS)))
    doc = {"format": "alexnet_zoo", "format_version": 1, "architecture": arch,
           "config": ARCHS[arch].to_dict(), "num_classes": 1000,
           "preprocessing": draw(st.sampled_from([BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING])).to_dict()}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from([doc, doc.get("config"), doc.get("preprocessing")]))
        if not isinstance(section, dict):
            continue
        name = draw(st.sampled_from(sorted(section) + ["bogus"]))
        action = draw(st.sampled_from(["edge", "json", "delete"]))
        if action == "delete":
            section.pop(name, None)
        else:
            section[name] = draw(_EDGES if action == "edge" else _json_values())
    return doc


def _check_config(path: Path):
    """read_config_file: InvalidConfig, or a config every part of the library can use as is."""
    try:
        found = read_config_file(path, architectures=ARCHS)
    except InvalidConfig as err:
        assert str(err).startswith(f"{path}: ")
        return None
    with torch.device("meta"):
        model = AlexNet(found.config)  # every accepted config builds
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == found.config.parameter_shapes()
    again = AlexNetConfig.from_dict(json.loads(json.dumps(found.config.to_dict())))
    assert again.replace(extra={}) == found.config.replace(extra={})  # extra may hold NaN, which != NaN
    if found.preprocessing is not None:
        x = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
        assert bool(torch.isfinite(found.preprocessing.transforms().normalize(x)).all())
    return found


@FUZZ
@given(config_documents())
def test_an_edited_config_is_usable_or_refused(tmp, doc):
    path = tmp / "config.json"
    path.write_text(json.dumps(doc))  # NaN and Infinity as Python writes them
    _check_config(path)


@FUZZ
@given(st.binary(max_size=256) | config_documents().map(lambda d: json.dumps(d).encode()).flatmap(
    lambda raw: st.tuples(st.just(raw), _mutations).map(lambda t: _mutate(*t))))
@example(b"[" * 5000)
@example(b'{"architecture": "alexnet", "config": {"widths": [' + b"9" * 5000 + b"]}}")
@example(b'{"architecture": "alexnet", "config": {}, "config": []}')
def test_any_config_bytes_are_usable_or_refused(tmp, raw):
    path = tmp / "config.json"
    path.write_bytes(raw)
    _check_config(path)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from safetensors.torch import save_file

    config = OWT.replace(widths=(2, 2, 2, 2, 2), hidden=3, num_classes=2)
    path = tmp_path_factory.mktemp("tiny") / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in config.parameter_shapes().items()}, str(path))
    return path


@FUZZ
@given(st.fixed_dictionaries({"widths": st.sampled_from([[2] * 5, [2, 2, 2, 2, 4]]), "hidden": st.integers(1, 4),
                              "num_classes": st.integers(0, 3), "groups": st.sampled_from([[1] * 5, [1, 2, 1, 2, 2]]),
                              "kernels": st.sampled_from([[11, 5, 3, 3, 3], [11, 5, 3, 3, 1]])}))
def test_weights_fit_their_config_exactly_or_are_refused(tiny_weights, fields):
    config = OWT.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    fits = config == OWT.replace(widths=(2, 2, 2, 2, 2), hidden=3, num_classes=2)
    try:
        check_weights_fit(tiny_weights, config, "alexnet_owt")
        assert fits
    except WeightsError as err:
        assert not fits and "does not fit the alexnet_owt its config.json describes" in str(err)


# ---- label files -----------------------------------------------------------------------------------

PRESENT = ["a.jpg", "b c.JPEG", "d,e.png", 'f"g.jpg', "h\x85i.jpg", "j\u2028k.jpg", "l\x1cm.jpg", "n\nline.jpg",
           "n01440764_1.JPEG", "ILSVRC2012_val_00000001.JPEG"]


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("labels")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for name in PRESENT:
        (root / name).write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "x.jpg").write_bytes(b"")
    return root


def _check_labels(root: Path, label_file: Path) -> None:
    """from_label_file: LabelFileError naming the file, or samples that exist below ``root``."""
    try:
        found = from_label_file(root, label_file)
    except LabelFileError as err:
        assert str(err).startswith(str(label_file))
        return
    assert found.samples
    for path, label in found.samples:
        assert Path(path).is_file() and (Path(path).resolve().is_relative_to(root.resolve()) or ".." in path)
        assert 0 <= label < MAX_CLASSES and type(label) is int
    torch.tensor([label for _, label in found.samples])  # what collate does with them


_names = st.sampled_from(PRESENT + ["sub/x.jpg", "missing.jpg", "/etc/passwd", "../x", ""]) | st.text(max_size=6)
_labels = (st.integers(-3, 2000).map(str) | st.sampled_from(["n01440764", "n99999999", "²", "٣", "1" * 30, "1e3",
                                                               " 7", "0x1", "1" * 5000]))
_terminators = st.sampled_from(["\n", "\r\n", "\r", "\x85", "\u2028", "\x0b", ""])


@st.composite
def label_texts(draw) -> str:
    rows = draw(st.lists(st.tuples(_names, _labels, _terminators, st.sampled_from([" ", ",", "\t", ", ", '"'])),
                         max_size=6))
    header = draw(st.sampled_from(["", "filename,label\n", "path,wnid\n", "name,target,extra\n", "image\n"]))
    return header + "".join(f"{n}{sep}{label}{end}" for n, label, end, sep in rows)


@FUZZ
@given(st.sampled_from(["val.txt", "labels.csv"]),
       label_texts() | st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
@example("labels.csv", "a.jpg," + "1" * 5000)  # int() of 5000 digits raises a bare ValueError
@example("val.txt", "a.jpg ²")  # isdigit() but not int()
@example("val.txt", "a.jpg 99999999999999999999")  # beyond int64: collate's torch.tensor overflowed
@example("labels.csv", "a.jpg,1\n" + '"' + "x" * 200_000)  # a field over csv's limit
@example("val.txt", "h\x85i.jpg 3")  # splitlines() cut this name in two
@example("val.txt", "sub/" + "x" * 300 + " 1\na.jpg 2")  # is_file() raised ENAMETOOLONG
def test_any_label_file_text_is_read_or_refused(images, labels_dir, name, text):
    path = labels_dir / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass", newline="")
    _check_labels(images, path)


@FUZZ
@given(st.sampled_from(["val.txt", "labels.csv"]), st.binary(max_size=120))
@example("val.txt", b"a.jpg 1\n\xff\xfe")
def test_any_label_file_bytes_are_read_or_refused(images, labels_dir, name, raw):
    path = labels_dir / name
    path.write_bytes(raw)
    _check_labels(images, path)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PRESENT + ["sub/x.jpg"]), st.integers(0, MAX_CLASSES - 1)), min_size=1,
                max_size=8))
def test_csv_written_by_csv_reads_back_exactly(images, labels_dir, rows):
    """Names holding commas, quotes and line breaks round-trip through a CSV written by csv.writer."""
    out = io.StringIO()
    csv.writer(out).writerows([("filename", "label"), *rows])
    path = labels_dir / "labels.csv"
    path.write_text(out.getvalue(), encoding="utf-8", newline="")
    found = from_label_file(images, path)
    assert found.samples == tuple((str(images / n), label) for n, label in rows) and not found.missing


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([n for n in PRESENT if "\n" not in n and "\r" not in n]),
                          st.integers(0, MAX_CLASSES - 1)), min_size=1, max_size=8),
       st.sampled_from(["\n", "\r\n"]))
def test_caffe_val_txt_reads_back_exactly(images, labels_dir, rows, end):
    """Every character but \\n and \\r may be in a name (\\x85, U+2028 included); \\r\\n ends lines too."""
    path = labels_dir / "val.txt"
    path.write_text("".join(f"{n} {label}{end}" for n, label in rows), encoding="utf-8", newline="")
    found = from_label_file(images, path)
    assert found.samples == tuple((str(images / n), label) for n, label in rows)


_wnids = st.integers(0, 10**8 - 1).map(lambda i: f"n{i:08d}")
_words = st.text(st.characters(blacklist_characters="\n\r,", blacklist_categories=("Cs",)), min_size=1,
                 max_size=8).filter(lambda w: w.strip() == w and w)


@FUZZ
@given(st.lists(st.tuples(_wnids, st.lists(_words, min_size=1, max_size=3)), max_size=6, unique_by=lambda t: t[0]))
def test_synset_words_read_back_exactly(entries):
    text = "".join(f"{wnid} {', '.join(words)}\n" for wnid, words in entries)
    parsed = parse_synset_words(text, "synsets.txt")
    assert [(c.index, c.wnid, c.synonyms) for c in parsed] == [(i, w, tuple(s)) for i, (w, s) in enumerate(entries)]


@FUZZ
@given(st.text(max_size=120) | st.lists(st.tuples(_wnids | st.text(max_size=9), st.text(max_size=9)), max_size=5).map(
    lambda rows: "\n".join(f"{w} {s}" for w, s in rows)))
@example("n01440764 tench\nn01440764 tench again")
@example("n01440764\n")
@example("n٠١٤٤٠٧٦٤ digits of another script")
def test_any_synset_text_is_read_or_refused(text):
    try:
        parsed = parse_synset_words(text, "synsets.txt")
    except LabelFileError as err:
        assert str(err).startswith("synsets.txt:")
        return
    assert len({c.wnid for c in parsed}) == len(parsed) and all(c.name for c in parsed)
