"""Native CPU kernels: plain C sources compiled once per machine with the system C compiler.

Why not a torch C++ extension: those take a minute to compile against torch's headers and tie the
wheel to one torch build. These sources use no headers beyond libc, compile in about a second, and
are called through ctypes. They are built with -fopenmp where the compiler has it: loaded after
torch, they then bind to the libgomp.so.1 torch already loaded and share its thread pool. Where no
compiler exists, or ``ALEXNET_ZOO_NATIVE=0``, or nothing below works, callers fall back to plain
torch operations with the same results: a kernel problem never stops inference.

May import: the foundation modules only (paths for the cache folder; ops.capabilities, which
imports torch, only when a kernel is built or looked up).

Flags. Each toolchain accepts a different set: some ARM compilers refuse ``-march=native`` (they
want ``-mcpu=native``), Apple's clang has no OpenMP. Builds try a ladder, best first: every arch
rung with and then without ``-fopenmp``, the last rung without any arch flag. Where ATen's ISA is
capped (``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 CPU) the arch rungs target that ISA instead of
``-march=native``, so a capped test pass runs the code an AVX2 machine runs. The cache key covers
the source, the compiler (path, size, mtime), every rung of the ladder and the CPU, so the flags a
build ends with are a function of the key.

Threat model. Loading a library runs its code (constructors) in this process with this user's
rights, so a library is loaded only from a folder that no other user can write:

* Kernels live in ``<cache>/kernels-<uid>``, created 0700. A folder (or library file) that is not
  owned by this user, is writable by group or others, or is a symbolic link is refused, with one
  warning, and the kernels are built privately instead: in ``<tmp>/alexnet_zoo-kernels-<uid>``
  (checked the same way), else a fresh ``mkdtemp`` folder removed right after loading. So a shared
  or foreign ``ALEXNET_ZOO_CACHE`` can cost a rebuild, never code execution.
* Ownership is checked with ``fstat`` on descriptors opened with ``O_NOFOLLOW``, not with
  ``os.access``: root ignores modes for access, and a path checked then opened again can be
  swapped in between by anyone who can write a parent (a shared cache root). On Linux the library
  is loaded through ``/proc/self/fd/<folder fd>/<file>``, i.e. from the very folder that was
  checked; elsewhere the path is opened again (a residual race, left to parents the user controls).
* Each file is named by the sha256 of its bytes, verified before loading. No other user can write
  the folder, so the name is a record they cannot forge; the hash guards against damage (a
  truncated, emptied or overwritten file), which is removed and rebuilt once. A library that
  verifies but does not load (ctypes ``OSError``) is treated the same way.
* Trusted: this user and root (either can replace anything this user runs), the compiler on
  ``$CC``/``PATH``, and the package's own sources.

Concurrency: compilers write into a private temporary folder; the result is written to a temporary
name beside the target and renamed, so concurrent builders never expose a half-written library
(identical builds rename onto the same name; differing ones each leave a valid file).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from alexnet_zoo.paths import cache_dir

__all__ = ["load_kernel", "native_enabled"]

_BASE_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
_OPENMP = ("-fopenmp",)  # dropped, with a serial build as the result, where the compiler lacks it
_X86 = ("x86_64", "amd64", "i386", "i686")
_warned_folders: set[str] = set()  # one warning per refused folder per process
_warned_compilers: set[str] = set()  # one build-failure warning per compiler per process


class _UnsafeError(OSError):
    """A folder or file that another user could have written: never loaded from."""


class _BuildError(RuntimeError):
    """Every rung of the flag ladder failed to compile."""


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


def _arch_ladder() -> tuple[tuple[str, ...], ...]:
    """Arch flag sets to try, best first. On x86 they follow the ISA ATen dispatches to (which
    honours ``ATEN_CPU_CAPABILITY``), so the C kernels never use instructions ATen was told not to."""
    if platform.machine().lower() in _X86:
        from alexnet_zoo.ops import capabilities  # imports torch: only when a kernel is built or looked up

        isa = capabilities.cpu_capabilities().isa.upper()
        if isa == "AVX2":
            return ("-march=x86-64-v3",), ("-mavx2", "-mfma", "-mf16c"), ()  # gcc < 11 lacks x86-64-v3
        if isa == "DEFAULT":
            return ((),)
    return ("-march=native",), ("-mcpu=native",), ()


def _flag_ladder() -> tuple[tuple[str, ...], ...]:
    """Every full flag set a build tries, in order: each arch rung with OpenMP, then without."""
    return tuple(_BASE_FLAGS + arch + omp for arch in _arch_ladder() for omp in (_OPENMP, ()))


def _compiler() -> list[str] | None:
    """``$CC`` (which may carry words, e.g. ``ccache gcc``), else cc, gcc or clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        words = shlex.split(cc)
        return words or None
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def _compiler_identity(compiler: list[str]) -> str:
    """The command plus the executable's real path, size and mtime: an upgraded compiler rebuilds."""
    exe = shutil.which(compiler[0]) or compiler[0]
    try:
        real = os.path.realpath(exe)
        st = os.stat(real)
        return f"{shlex.join(compiler)}|{real}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return shlex.join(compiler)


@functools.cache
def load_kernel(name: str) -> ctypes.CDLL | None:
    """The compiled library for ``kernels/<name>.c``, building it on first use; None if unavailable
    (with a warning when a build was attempted and failed). Callers check :func:`native_enabled`
    first (this result is cached, the switch is not)."""
    if platform.system() == "Windows":
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    try:
        source = resources.files(__package__).joinpath(f"{name}.c").read_bytes()
        ladder = _flag_ladder()
        key = hashlib.sha256(b"\0".join([source, repr(ladder).encode(), _compiler_identity(compiler).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        return _load_or_build(name, f"{name}-{key}", compiler, source, ladder)
    except (OSError, subprocess.SubprocessError, _BuildError) as err:
        if shlex.join(compiler) not in _warned_compilers:  # one warning, not one per kernel
            _warned_compilers.add(shlex.join(compiler))
            warnings.warn(f"alexnet_zoo: could not build the native '{name}' kernel ({err}); using the slower "
                          "torch implementation (other kernels that fail the same way say so no more)",
                          RuntimeWarning, stacklevel=2)
        return None


def _load_or_build(name: str, stem: str, compiler: list[str], source: bytes,
                   ladder: tuple[tuple[str, ...], ...]) -> ctypes.CDLL:
    """Load a verified ``<stem>-<sha256>.so`` from the first usable private folder, building it
    there (at most once per call) where none is found. Raises when nothing can be built or loaded."""
    built: bytes | None = None
    refused: list[str] = []
    for folder, ephemeral in _folders():
        if isinstance(folder, OSError):
            refused.append(f"the cache folder {folder.filename or ''}: {_describe(folder)}")
            continue
        try:
            dfd = _open_private(folder)
        except OSError as err:
            refused.append(f"{folder}: {_describe(err)}")
            continue
        try:
            lib = _find_verified(dfd, folder, stem)
            if lib is None:
                if built is None:
                    built = _compile(compiler, source, ladder)
                lib = _load(dfd, folder, _store(dfd, stem, built))
            if refused:
                _warn_folder(refused, folder, name)
            return lib
        except OSError as err:  # unwritable (read-only, full, noexec): try the next folder
            refused.append(f"{folder}: {_describe(err)}")
        finally:
            os.close(dfd)
            if ephemeral:
                shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped
    raise OSError("no private folder to build and load in: " + "; ".join(refused))


def _folders() -> Iterator[tuple[Path | OSError, bool]]:
    """Candidate folders, each with whether it is a one-off to remove after use: the cache's
    per-user folder, a stable per-user temporary folder, then a fresh private ``mkdtemp``. A cache
    root that cannot be created (read-only home, a path under a file) comes as its error."""
    uid = os.geteuid()
    try:
        root: Path | OSError = cache_dir()
    except OSError as err:
        root = err
    yield (root / f"kernels-{uid}" if isinstance(root, Path) else root), False
    try:
        tmp = tempfile.gettempdir()
    except OSError:
        return
    yield Path(tmp, f"alexnet_zoo-kernels-{uid}"), False
    yield Path(tempfile.mkdtemp(prefix="alexnet_zoo-kernels-")), True


def _describe(err: OSError) -> str:
    return str(err) if isinstance(err, _UnsafeError) else f"{type(err).__name__}: {err.strerror or err}"


def _warn_folder(refused: list[str], used: Path, name: str) -> None:
    """Say once per refused folder why the usual cache was not used and where kernels went."""
    new = [reason for reason in refused if reason not in _warned_folders]
    if new:
        _warned_folders.update(new)
        warnings.warn(f"alexnet_zoo: not using {'; '.join(new)}; the native kernels ('{name}' first) are built "
                      f"in {used} instead (set ALEXNET_ZOO_CACHE to a folder of your own to keep them)",
                      RuntimeWarning, stacklevel=4)


def _check_private(st: os.stat_result, what: str, want: int) -> None:
    """Refuse anything another user could have written: wrong type, foreign owner, group/other write."""
    if stat.S_IFMT(st.st_mode) != want:
        raise _UnsafeError(f"{what} is not a {'folder' if want == stat.S_IFDIR else 'regular file'}")
    if st.st_uid != os.geteuid():
        raise _UnsafeError(f"{what} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _UnsafeError(f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def _open_private(folder: Path) -> int:
    """A descriptor of ``folder``, created 0700 if missing; raises if it is not private."""
    try:
        os.mkdir(folder, 0o700)
        os.chmod(folder, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        if os.path.islink(folder):
            raise _UnsafeError(f"{folder} is a symbolic link") from err
        raise
    try:
        _check_private(os.fstat(dfd), str(folder), stat.S_IFDIR)
    except BaseException:
        os.close(dfd)
        raise
    return dfd


def _find_verified(dfd: int, folder: Path, stem: str) -> ctypes.CDLL | None:
    """Load the first ``<stem>-<sha256>.so`` in the folder whose bytes hash to its name. Damaged
    files, and verified ones that fail to load, are removed (the caller rebuilds); foreign files
    (possible only by root) are left alone and skipped."""
    for entry in sorted(os.listdir(dfd)):
        digest = entry[len(stem) + 1:-3] if entry.startswith(stem + "-") and entry.endswith(".so") else ""
        if len(digest) != 64:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
        except OSError:
            continue
        try:
            _check_private(os.fstat(fd), str(folder / entry), stat.S_IFREG)
            with os.fdopen(os.dup(fd), "rb") as f:
                intact = hashlib.sha256(f.read()).hexdigest() == digest
        except _UnsafeError:
            continue
        finally:
            os.close(fd)
        if intact:
            try:
                return _load(dfd, folder, entry)
            except OSError:
                pass
        try:
            os.unlink(entry, dir_fd=dfd)
        except OSError:
            pass  # a read-only folder: skipped, and the build goes elsewhere
    return None


def _load(dfd: int, folder: Path, entry: str) -> ctypes.CDLL:
    """dlopen ``entry`` through the checked folder's descriptor where the OS allows it. The name
    holds the content hash, so the dynamic loader's by-name reuse can only return the same bytes."""
    via_fd = f"/proc/self/fd/{dfd}"
    return ctypes.CDLL(f"{via_fd}/{entry}" if os.path.isdir(via_fd) else str(folder / entry))


def _store(dfd: int, stem: str, data: bytes) -> str:
    """Write ``data`` as ``<stem>-<sha256>.so`` (mode 0700) via a temporary name and a rename."""
    entry = f"{stem}-{hashlib.sha256(data).hexdigest()}.so"
    tmp = f".{entry}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, entry, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    return entry


def _compile(compiler: list[str], source: bytes, ladder: tuple[tuple[str, ...], ...]) -> bytes:
    """The library's bytes from the first flag set the compiler accepts, built in a private
    temporary folder (the cache folder never sees a half-written file). Any failure here is a
    build failure, not a folder's: the caller does not retry it elsewhere."""
    errors = []
    try:
        with tempfile.TemporaryDirectory(prefix="alexnet_zoo-build-") as tmp:
            src, out = Path(tmp, "kernel.c"), Path(tmp, "kernel.so")
            src.write_bytes(source)
            for flags in ladder:
                proc = subprocess.run([*compiler, *flags, "-o", str(out), str(src), "-lm"],
                                      capture_output=True, text=True, timeout=120)
                if proc.returncode == 0:
                    return out.read_bytes()
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-300:] or f'exit {proc.returncode}'}")
    except OSError as err:
        raise _BuildError(f"cannot build with {shlex.join(compiler)}: {err}") from err
    raise _BuildError(f"{shlex.join(compiler)} refused every flag set; " + " | ".join(errors[-2:]))
