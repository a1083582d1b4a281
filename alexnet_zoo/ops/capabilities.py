"""What this CPU does natively, asked once, so that every fast path decides from the same facts.

The project runs on CPUs from AVX2-only EPYCs to AVX-512/AMX Xeons and ARM servers, and a path
that assumes a feature fails on the next machine (oneDNN refuses bf16 primitives on AVX2 with a
RuntimeError, not a slow fallback). Two views are combined:

* what the hardware has (the kernel's CPU flags: ``/proc/cpuinfo``, or torch's cpuinfo probes);
* what the libraries are allowed to use: ATen dispatches to ``torch.backends.cpu.get_cpu_capability()``
  (capped by ``ATEN_CPU_CAPABILITY``) and oneDNN to its own ISA (capped by ``ONEDNN_MAX_CPU_ISA``).

A capability counts only when both say yes, so ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``
on a big CPU gives exactly the decisions an AVX2 machine makes (``.ci/run`` tests that way).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["CpuCapabilities", "cpu_capabilities", "machine_facts", "warn_emulated_bf16"]


@dataclass(frozen=True)
class CpuCapabilities:
    """The CPU facts the fast paths ask for; ``native_bf16`` is the one that matters most."""

    machine: str  # platform.machine(): x86_64, aarch64, arm64, ...
    model: str  # the CPU's model name ("" where the OS does not say)
    isa: str  # the vector ISA ATen dispatches to: AVX512, AVX2, SVE256, DEFAULT, ...
    avx2: bool
    avx512: bool
    avx512_bf16: bool  # AVX512-BF16 dot products (Cooper Lake, Sapphire Rapids, Zen 4 and later)
    amx: bool  # AMX tiles (Sapphire Rapids and later)
    avx_ne_convert: bool  # AVX2-class bf16 conversions (Sierra Forest, Arrow Lake)
    neon: bool
    sve: bool
    arm_bf16: bool  # ARMv8.6 BF16 (Graviton 3, Neoverse V1 and later)
    onednn_bf16: bool  # oneDNN builds bf16 convolutions and inner products (honours ONEDNN_MAX_CPU_ISA)
    native_bf16: bool  # ... and the hardware computes in bf16: bf16 is then faster than fp32

    def summary(self) -> str:
        """One line for warnings and benchmark reports."""
        features = [name for name in ("avx2", "avx512", "avx512_bf16", "amx", "avx_ne_convert", "neon", "sve",
                                      "arm_bf16") if getattr(self, name)]
        return (f"{self.machine}, ATen ISA {self.isa}, features {' '.join(features) or 'none'}, "
                f"native bf16 {'yes' if self.native_bf16 else 'no'}")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@functools.cache
def cpu_capabilities() -> CpuCapabilities:
    """This process's CPU capabilities (read once: the environment caps are read at torch's import)."""
    machine = platform.machine().lower()
    isa = torch.backends.cpu.get_cpu_capability()
    model, flags = _cpuinfo()
    x86 = machine in ("x86_64", "amd64", "i686", "i386")
    arm = machine in ("aarch64", "arm64") or machine.startswith("armv8")
    isa_avx512 = isa.upper().startswith("AVX512")
    avx2 = x86 and ("avx2" in flags or _torch_probe("_is_avx2_supported")) and isa.upper() != "DEFAULT"
    avx512 = x86 and isa_avx512 and ("avx512f" in flags or _torch_probe("_is_avx512_supported"))
    avx512_bf16 = avx512 and ("avx512_bf16" in flags or _torch_probe("_is_avx512_bf16_supported"))
    amx = avx512 and ("amx_bf16" in flags or _torch_probe("_is_amx_tile_supported"))
    avx_ne_convert = avx2 and "avx_ne_convert" in flags
    neon = arm  # mandatory on ARMv8-A
    sve = arm and ("sve" in flags or isa.upper().startswith("SVE"))
    arm_bf16 = arm and ("bf16" in flags or _apple_feature("hw.optional.arm.FEAT_BF16"))
    onednn_bf16 = _onednn_bf16()
    native = onednn_bf16 and (avx512_bf16 or amx or avx_ne_convert or arm_bf16)
    return CpuCapabilities(machine, model, isa, avx2, avx512, avx512_bf16, amx, avx_ne_convert, neon, sve, arm_bf16,
                           onednn_bf16, native)


def machine_facts(device: str | None = None) -> dict[str, Any]:
    """What a timing depends on, for every report that records one (the evaluation recipe, the speed
    scripts in benchmarks/): versions, the CPU's model name, cores and torch's threads, and with
    ``device`` that device (and the GPU's name for a CUDA device)."""
    try:
        vision = importlib.metadata.version("torchvision")  # without importing it (1.2 s of torch._dynamo)
    except importlib.metadata.PackageNotFoundError:
        vision = None
    facts: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": vision,
        "platform": platform.platform(), "cpu": cpu_capabilities().model or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    if device is not None:
        facts["device"] = device
        if device.startswith("cuda"):
            facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return facts


@functools.cache
def warn_emulated_bf16() -> None:
    """Say once per process why bf16 is slow here: it runs correctly, on torch's generic kernels."""
    caps = cpu_capabilities()
    if caps.onednn_bf16:
        why = "this CPU has no bf16 instructions (AVX512-BF16, AMX or ARM BF16), so oneDNN emulates them"
    else:
        why = ("oneDNN cannot run bf16 on this CPU (it needs AVX512-BF16, AMX, AVX-NE-CONVERT or ARM BF16), "
               "so torch's generic kernels compute it")
    warnings.warn(f"alexnet_zoo: bf16 was requested but {why}: results are correct, but slower than fp32 "
                  f"(choose fp32, or 'auto', for speed). "
                  f"CPU: {caps.summary()}", RuntimeWarning, stacklevel=3)


def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and the kernel's CPU flags (x86 'flags', ARM 'Features') from
    ``/proc/cpuinfo``; empty where /proc is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        if not model and line.startswith("model name"):
            model = line.partition(":")[2].strip()
        elif not flags and line.startswith(("flags", "Features")):
            flags = frozenset(line.partition(":")[2].split())
    return model, flags


def _torch_probe(name: str) -> bool:
    """torch's own cpuinfo probes (present since torch 2.3; absent ones count as no)."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def _apple_feature(name: str) -> bool:
    if platform.system() != "Darwin":
        return False
    try:
        import subprocess

        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return done.stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False


def _onednn_bf16() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ("SSE41", "AVX", "AVX2", "AVX2_VNNI"):
        return False  # older torch builds answer from cpuinfo without reading the cap
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False
