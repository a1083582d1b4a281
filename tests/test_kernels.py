"""The native kernels' build and cache (alexnet_zoo/ops/kernels): unusable or hostile cache folders, damaged
libraries, compilers that refuse flags, concurrent builders and capped ISAs. Real compiles with the
system cc, real files; a stand-in compiler (a shell script on $CC) refuses chosen flags."""

import contextlib
import dataclasses
import fnmatch
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from alexnet_zoo import alexnet
from alexnet_zoo.ops import capabilities, kernels, winograd
from alexnet_zoo.ops.kernels import load_kernel

REAL_CC = shutil.which("cc")
UID = os.geteuid()
OTHER_UID = 65534  # nobody
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(platform.system() == "Windows" or REAL_CC is None,
                                reason="native kernels need a POSIX system with a C compiler")
needs_root = pytest.mark.skipif(UID != 0, reason="giving a file to another user (chown) needs root")


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """Each test: its own cache root and temporary folder, native kernels on, the system compiler,
    and no library remembered from an earlier test (before or after)."""
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(cache))
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "1")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    load_kernel.cache_clear()
    yield SimpleNamespace(cache=cache, kernels=cache / f"kernels-{UID}", tmp=tmp,
                          fallback=tmp / f"alexnet_zoo-kernels-{UID}")
    load_kernel.cache_clear()


def stand_in(folder: Path, refuse: str = "", fail_if: Path | None = None) -> Path:
    """A compiler script that refuses arguments matching the shell pattern ``refuse`` the way gcc does,
    fails outright while ``fail_if`` exists, logs the flag sets it accepts, and otherwise runs cc."""
    folder.mkdir(parents=True, exist_ok=True)
    script, log = folder / "cc-stand-in", folder / "accepted.log"
    refusal = (f'for arg in "$@"; do\n    case "$arg" in {refuse}) echo "cc: error: unrecognized command-line '
               f'option \'$arg\'" >&2; echo x >> "{folder}/refused.log"; exit 1;; esac\ndone\n') if refuse else ""
    failing = f'[ -e "{fail_if}" ] && {{ echo "cc: fatal error: broken" >&2; exit 1; }}\n' if fail_if else ""
    script.write_text(f'#!/bin/sh\n{failing}{refusal}echo "$*" >> "{log}"\nexec {REAL_CC} "$@"\n')
    script.chmod(0o755)
    return script


def accepted_flags(folder: Path) -> list[list[str]]:
    """The flag sets (arguments before ``-o``) the stand-in compiler accepted, in order."""
    log = folder / "accepted.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" -o ")[0].split() for line in lines]


def libraries(folder: Path, name: str = "winograd") -> list[Path]:
    return sorted(folder.glob(f"{name}-*.so"))


def damage(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` as a new file: this process has the old one mapped, and rewriting a
    mapped library in place makes the process die of SIGBUS when it next touches those pages (at
    exit, in the OpenMP runtime's destructors), long after the test passed."""
    spare = path.with_name(path.name + ".damaged")
    spare.write_bytes(data)
    spare.chmod(path.stat().st_mode & 0o777)
    os.replace(spare, path)


def assert_intact(path: Path) -> None:
    """The file's bytes hash to the sha256 in its name."""
    assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.rsplit("-", 1)[1][:-3]


def assert_winograd_correct() -> None:
    """The loaded Winograd kernel is used and computes the convolution."""
    conv = torch.nn.Conv2d(32, 48, 3, padding=1).eval()
    x = torch.randn(16, 32, 13, 13)
    with torch.inference_mode():
        assert winograd.applies(conv, x)
        y, ref = winograd.conv2d(conv, x, relu=False), conv(x)
    assert ((y - ref).abs().max() / ref.abs().max()).item() < 1e-5


def runtime_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)
            and "alexnet_zoo" in str(w.message)]


@contextlib.contextmanager
def recorded():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` really unwritable for this process: mode 0555 for a user; for root, who ignores
    modes, the immutable attribute (chattr +i). Checked by trying to write; skipped where impossible."""
    folder.mkdir(parents=True, exist_ok=True)
    if UID == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                            capture_output=True).returncode != 0:
            pytest.skip("root ignores folder modes, and chattr +i (which stops root too) is unavailable here")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        probe = folder / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip(f"{folder} stayed writable")
        yield folder
    finally:
        subprocess.run(undo, check=True)


def planted_library(folder: Path, stem: str, marker: Path) -> Path:
    """What an attacker who can write a cache would leave: a library named like ours (its own sha256
    and all) whose constructor runs on load; ``marker`` appears if it ever ran."""
    src = folder / "planted.c"
    src.write_text(textwrap.dedent(f"""\
        #include <stdio.h>
        __attribute__((constructor)) static void planted(void) {{
            FILE *f = fopen("{marker}", "w");
            if (f) fclose(f);
        }}
        int wino_input_f32(void) {{ return 1; }}
    """))
    out = folder / "planted.so"
    subprocess.run([REAL_CC, "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    data = out.read_bytes()
    target = folder / f"{stem}-{hashlib.sha256(data).hexdigest()}.so"
    out.rename(target)
    src.unlink()
    return target


@pytest.fixture
def stem(fresh, tmp_path, monkeypatch) -> str:
    """The name prefix this compiler and source give the Winograd kernel (built once in a scratch cache)."""
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(tmp_path / "scratch"))
    assert load_kernel("winograd") is not None
    (built,) = libraries(tmp_path / "scratch" / f"kernels-{UID}")
    load_kernel.cache_clear()
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(fresh.cache))
    return built.name.rsplit("-", 1)[0]


def python(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- 1. an unwritable or uncreatable cache folder ----------------------------------------------------

def test_cache_under_a_regular_file_still_runs_plain_inference(fresh, monkeypatch):
    (fresh.tmp / "a-file").write_text("")
    cache = fresh.tmp / "a-file" / "cache"
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(cache))
    model = alexnet().eval()
    x = torch.randn(4, 3, 227, 227)  # a batch big enough for the Winograd kernel too
    with recorded() as record, torch.inference_mode():
        y = model(x)
    messages = runtime_warnings(record)
    assert len(messages) == 1 and str(cache) in messages[0] and str(fresh.fallback) in messages[0]
    assert libraries(fresh.fallback, "lrn") and libraries(fresh.fallback, "winograd")
    assert stat.S_IMODE(fresh.fallback.stat().st_mode) == 0o700
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    with torch.inference_mode():
        ref = model(x)
    assert torch.allclose(y, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("where", ["ALEXNET_ZOO_CACHE", "HOME"])
def test_read_only_cache_or_home_builds_in_a_private_temporary_folder(fresh, monkeypatch, where):
    folder = fresh.tmp / "read-only"
    if where == "HOME":
        monkeypatch.delenv("ALEXNET_ZOO_CACHE")
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", str(folder))
    else:
        monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(folder))
    with read_only(folder), recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    messages = runtime_warnings(record)
    assert len(messages) == 1 and str(folder) in messages[0] and str(fresh.fallback) in messages[0]
    (built,) = libraries(fresh.fallback)
    assert_intact(built)


def test_read_only_cache_with_a_verified_kernel_needs_no_compiler(fresh, tmp_path, monkeypatch):
    broken = tmp_path / "compiler-broken"
    monkeypatch.setenv("CC", str(stand_in(tmp_path / "cc", fail_if=broken)))
    assert load_kernel("winograd") is not None
    load_kernel.cache_clear()
    broken.touch()  # the same key, but nothing can be rebuilt: the library must be found
    with read_only(fresh.kernels), recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert runtime_warnings(record) == [] and not fresh.fallback.exists()
    assert len(accepted_flags(tmp_path / "cc")) == 1


# ---- 2. a damaged cached library ---------------------------------------------------------------------

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: os.urandom(len(data)),
    "one-byte": lambda data: data[:4096] + bytes([data[4096] ^ 0xFF]) + data[4097:],
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_kernel_is_rebuilt(fresh, kind):
    assert load_kernel("winograd") is not None
    (built,) = libraries(fresh.kernels)
    damage(built, DAMAGE[kind](built.read_bytes()))
    load_kernel.cache_clear()
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert runtime_warnings(record) == []
    (rebuilt,) = libraries(fresh.kernels)
    assert_intact(rebuilt)


def test_damaged_kernel_loads_in_a_new_process(fresh):
    """A fresh process never maps the damaged bytes (a truncated ELF can crash the loader, not raise)."""
    assert load_kernel("winograd") is not None
    (built,) = libraries(fresh.kernels)
    damage(built, built.read_bytes()[:1000])
    child = python("from alexnet_zoo.ops.kernels import load_kernel; assert load_kernel('winograd').wino_input_f32",
                   {"ALEXNET_ZOO_CACHE": str(fresh.cache), "TMPDIR": str(fresh.tmp)})
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    (rebuilt,) = libraries(fresh.kernels)
    assert_intact(rebuilt)


def test_kernel_that_verifies_but_does_not_load_is_rebuilt(fresh, stem):
    fresh.kernels.mkdir(mode=0o700, parents=True)
    junk = b"not a shared library"
    bad = fresh.kernels / f"{stem}-{hashlib.sha256(junk).hexdigest()}.so"
    bad.write_bytes(junk)
    bad.chmod(0o700)
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert runtime_warnings(record) == [] and not bad.exists()
    (rebuilt,) = libraries(fresh.kernels)
    assert_intact(rebuilt)


def test_damaged_kernel_whose_rebuild_fails_falls_back_to_torch(fresh, tmp_path, monkeypatch):
    broken = tmp_path / "compiler-broken"
    monkeypatch.setenv("CC", str(stand_in(tmp_path / "cc", fail_if=broken)))
    assert load_kernel("winograd") is not None
    (built,) = libraries(fresh.kernels)
    damage(built, b"")
    broken.touch()
    load_kernel.cache_clear()
    conv = torch.nn.Conv2d(32, 48, 3, padding=1).eval()
    x = torch.randn(16, 32, 13, 13)
    with recorded() as record, torch.inference_mode():
        assert load_kernel("winograd") is None
        assert not winograd.applies(conv, x) and conv(x).shape == (16, 48, 13, 13)
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "'winograd'" in messages[0] and "torch implementation" in messages[0]


# ---- 3. libraries another user could have written ----------------------------------------------------

def assert_refused_and_rebuilt(fresh, marker: Path, reason: str, built_in: Path) -> None:
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert not marker.exists(), "the planted library was loaded"
    messages = runtime_warnings(record)
    assert len(messages) == 1 and reason in messages[0], messages
    (built,) = libraries(built_in)
    assert_intact(built)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702])
def test_group_or_world_writable_kernel_folder_is_refused(fresh, stem, tmp_path, mode):
    fresh.kernels.mkdir(parents=True)
    planted_library(fresh.kernels, stem, tmp_path / "ran")
    fresh.kernels.chmod(mode)
    assert_refused_and_rebuilt(fresh, tmp_path / "ran", "writable by group or others", fresh.fallback)


@needs_root
def test_kernel_folder_owned_by_another_user_is_refused(fresh, stem, tmp_path):
    fresh.kernels.mkdir(mode=0o700, parents=True)
    planted = planted_library(fresh.kernels, stem, tmp_path / "ran")
    os.chown(planted, OTHER_UID, OTHER_UID)
    os.chown(fresh.kernels, OTHER_UID, OTHER_UID)
    assert_refused_and_rebuilt(fresh, tmp_path / "ran", f"owned by uid {OTHER_UID}", fresh.fallback)


def test_symlinked_kernel_folder_is_refused(fresh, stem, tmp_path):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    planted_library(elsewhere, stem, tmp_path / "ran")
    fresh.cache.mkdir()
    fresh.kernels.symlink_to(elsewhere)
    assert_refused_and_rebuilt(fresh, tmp_path / "ran", "symbolic link", fresh.fallback)


@pytest.mark.parametrize("how", ["writable", pytest.param("foreign", marks=needs_root), "symlink"])
def test_unsafe_library_file_in_the_private_folder_is_skipped(fresh, stem, tmp_path, how):
    fresh.kernels.mkdir(mode=0o700, parents=True)
    planted = planted_library(fresh.kernels if how != "symlink" else tmp_path, stem, tmp_path / "ran")
    if how == "writable":
        planted.chmod(0o666)
    elif how == "foreign":
        os.chown(planted, OTHER_UID, OTHER_UID)
    else:
        (fresh.kernels / planted.name).symlink_to(planted)
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert not (tmp_path / "ran").exists(), "the planted library was loaded"
    assert runtime_warnings(record) == []
    (built,) = [p for p in libraries(fresh.kernels) if p.name != planted.name]  # built beside the skipped one
    assert_intact(built)


def test_temporary_fallback_prepared_by_someone_else_is_refused_too(fresh, stem, tmp_path, monkeypatch):
    """The per-user temporary folder has a predictable name: if it is not private either, a fresh
    mkdtemp folder is used and removed after loading."""
    (fresh.tmp / "a-file").write_text("")
    monkeypatch.setenv("ALEXNET_ZOO_CACHE", str(fresh.tmp / "a-file" / "cache"))
    fresh.fallback.mkdir()
    planted_library(fresh.fallback, stem, tmp_path / "ran")
    fresh.fallback.chmod(0o777)
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert not (tmp_path / "ran").exists(), "the planted library was loaded"
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "a-file" in messages[0] and "writable by group or others" in messages[0]
    assert sorted(p.name for p in fresh.tmp.iterdir()) == ["a-file", fresh.fallback.name]  # nothing left over


def test_kernel_folders_and_files_are_private_whatever_the_umask(fresh):
    old = os.umask(0)
    try:
        assert load_kernel("winograd") is not None
    finally:
        os.umask(old)
    st = fresh.kernels.stat()
    assert st.st_uid == UID and stat.S_IMODE(st.st_mode) == 0o700
    (built,) = libraries(fresh.kernels)
    assert built.stat().st_uid == UID and stat.S_IMODE(built.stat().st_mode) == 0o700
    assert [p.name for p in fresh.kernels.iterdir()] == [built.name]  # no temporary file left beside it


# ---- 4. toolchains and concurrent builders -----------------------------------------------------------

ARCH = "-march=*|-mcpu=*|-mavx2|-mfma|-mf16c"


@pytest.mark.parametrize("refuse", ["-march=*", "-fopenmp", ARCH, f"{ARCH}|-fopenmp"],
                         ids=["no-march (ARM)", "no-openmp (Apple clang)", "no-arch-flags", "neither"])
def test_compiler_refusals_walk_the_flag_ladder(fresh, tmp_path, monkeypatch, refuse):
    monkeypatch.setenv("CC", str(stand_in(tmp_path / "cc", refuse)))
    ladder = kernels._flag_ladder()
    allowed = [flags for flags in ladder if not any(fnmatch.fnmatch(f, p) for f in flags for p in refuse.split("|"))]
    with recorded() as record:
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    assert runtime_warnings(record) == []
    assert accepted_flags(tmp_path / "cc") == [list(allowed[0])]
    refused = (tmp_path / "cc" / "refused.log").read_text().count("x")
    assert refused == ladder.index(allowed[0]) > 0


def test_compiler_refusing_everything_leaves_inference_on_torch_with_one_warning(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(stand_in(tmp_path / "cc", "*")))
    model = alexnet().eval()
    x = torch.randn(1, 3, 227, 227)
    with recorded() as record, torch.inference_mode():
        y = model(x)
        assert load_kernel("lrn") is None and load_kernel("winograd") is None
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "could not build" in messages[0] and "unrecognized" in messages[0]
    monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")
    with torch.inference_mode():
        assert torch.allclose(y, model(x), rtol=1e-3, atol=1e-4)


def test_concurrent_builders_never_expose_a_half_written_library(fresh, tmp_path):
    """Two processes compile at the same moment (a stand-in compiler waits until both are inside it),
    then both load; the folder holds only complete, verified libraries."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "cc-barrier"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        touch "{barrier}/$$"
        i=0
        while [ "$(ls "{barrier}" | wc -l)" -lt 2 ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
        [ "$(ls "{barrier}" | wc -l)" -ge 2 ] && touch "{tmp_path}/met.$$"
        exec {REAL_CC} "$@"
    """))
    script.chmod(0o755)
    env = {"ALEXNET_ZOO_CACHE": str(fresh.cache), "TMPDIR": str(fresh.tmp), "CC": str(script)}
    code = "from alexnet_zoo.ops.kernels import load_kernel; assert load_kernel('winograd').wino_input_f32"
    children = [python(code, env) for _ in range(2)]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    assert len(list(tmp_path.glob("met.*"))) == 2  # both really compiled at once
    built = list(fresh.kernels.iterdir())
    assert built and all(p.suffix == ".so" for p in built)
    for path in built:
        assert_intact(path)


# ---- 5. a capped ISA ---------------------------------------------------------------------------------

def _has_avx2() -> bool:
    return capabilities.cpu_capabilities().avx2  # x86 with AVX2 that ATen may use


@pytest.mark.skipif(not _has_avx2(), reason="needs an x86 CPU with AVX2")
def test_capped_isa_builds_what_an_avx2_machine_runs(fresh, tmp_path):
    cc = stand_in(tmp_path / "cc")
    env = {"ALEXNET_ZOO_CACHE": str(fresh.cache), "TMPDIR": str(fresh.tmp), "CC": str(cc),
           "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = ("from alexnet_zoo.ops.capabilities import cpu_capabilities\n"
            "from alexnet_zoo.ops.kernels import load_kernel\n"
            "assert load_kernel('winograd').wino_input_f32\nprint(cpu_capabilities().isa)")
    child = python(code, env)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert out.split() == ["AVX2"]
    (flags,) = accepted_flags(tmp_path / "cc")
    assert "-march=x86-64-v3" in flags and "-march=native" not in flags


@pytest.mark.skipif(not _has_avx2(), reason="needs an x86 CPU with AVX2")
def test_cache_key_covers_the_isa_flags(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(stand_in(tmp_path / "cc")))
    real = capabilities.cpu_capabilities()
    for isa in ("AVX512", "AVX2", "AVX512"):
        monkeypatch.setattr(capabilities, "cpu_capabilities", lambda isa=isa: dataclasses.replace(real, isa=isa))
        load_kernel.cache_clear()
        assert load_kernel("winograd") is not None
        assert_winograd_correct()
    native, capped = accepted_flags(tmp_path / "cc")  # the third load found the first build
    assert "-march=native" in native and "-march=x86-64-v3" in capped
    assert len({p.name.rsplit("-", 1)[0] for p in libraries(fresh.kernels)}) == 2
