"""What the CPU can do for the embedding: its model name and instruction-set flags, whether it has
native bf16, and which int8 kernels a quantized model should be built for.

Read from /proc/cpuinfo (Linux, where ftm's workers run); elsewhere the flags are empty and the
choices fall back to what runs everywhere.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide the embedding's speed, as a benchmark reports them.
REPORTED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo; empty where there is none."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC 7B13"; the platform's processor string elsewhere."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as the kernel names them ("avx2", "avx512_vnni", ...)."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def int8_target(machine: str | None = None, flags: frozenset[str] | None = None) -> str:
    """The int8 kernels to quantize for: "arm64", "avx512_vnni", "avx512" or "avx2".

    The names and their settings are Optimum's `AutoQuantizationConfig` presets, which
    sentence-transformers' `export_dynamic_quantized_onnx_model` uses (see `onnx_export.py`).
    """
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"
