"""Native CPU kernels: plain C sources compiled once per machine with the system C compiler.

Why not a torch C++ extension: those take a minute to compile against torch's headers and tie the
wheel to one torch build. These sources use no headers beyond libc, compile in about a second, are
cached under the user's cache folder keyed by source, flags and CPU, and are called through ctypes.
They are built with -fopenmp where the compiler has it: loaded after torch, they then bind to the
libgomp.so.1 torch already loaded and share its thread pool. Where no compiler exists, or
``ALEXNET_ZOO_NATIVE=0``, callers fall back to plain torch operations with the same results.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from importlib import resources
from pathlib import Path

from alexnet_zoo.paths import cache_dir

__all__ = ["load_kernel", "native_enabled"]

_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
_OPENMP = ("-fopenmp",)  # dropped, with a serial build as the result, where the compiler lacks it


def native_enabled() -> bool:
    """False when the user switched native kernels off with ``ALEXNET_ZOO_NATIVE=0``."""
    return os.environ.get("ALEXNET_ZOO_NATIVE", "1") not in ("0", "false", "no", "off")


def _cpu_signature() -> str:
    """What -march=native depends on: a cache shared between machines must not mix binaries."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{platform.processor()}|{flags}"


@functools.cache
def load_kernel(name: str) -> ctypes.CDLL | None:
    """The compiled library for ``kernels/<name>.c``, building it on first use; None if unavailable.
    Callers check :func:`native_enabled` first (this result is cached, the switch is not)."""
    if platform.system() == "Windows":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    source = resources.files(__package__).joinpath(f"{name}.c").read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS + _OPENMP).encode(), compiler.encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    target = cache_dir("kernels") / f"{name}-{key}.so"
    if not target.exists():
        try:
            _compile(compiler, source, target)
        except (OSError, subprocess.SubprocessError) as err:
            warnings.warn(f"alexnet_zoo: could not build the native '{name}' kernel ({err}); "
                          "using the slower torch implementation", RuntimeWarning, stacklevel=2)
            return None
    return ctypes.CDLL(str(target))


def _compile(compiler: str, source: bytes, target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename: concurrent builders never
    expose a half-written library. Tries with OpenMP first, then without."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "kernel.c")
        src.write_bytes(source)
        out = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        for extra in (_OPENMP, ()):
            proc = subprocess.run([compiler, *_FLAGS, *extra, "-o", str(out), str(src), "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode == 0:
                os.replace(out, target)
                return
        out.unlink(missing_ok=True)
        raise subprocess.SubprocessError(proc.stderr.strip()[-2000:] or f"exit {proc.returncode}")
