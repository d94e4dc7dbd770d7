"""Compute-device selection shared by training and inference."""

from __future__ import annotations

import functools


def resolve_device(name: str = "auto") -> str:
    """Return a torch device string for ``name``.

    ``"auto"`` picks ``"cuda"``, then ``"mps"``, then ``"cpu"``. An explicit
    name that is not available raises InputError (a ValueError) with a one-line reason.
    """
    import torch

    from .errors import InputError

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available: choose device cpu or auto")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError("device 'mps' requested but Apple MPS is not available")
    if name not in {"cpu", "mps"} and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda:"):
        index = name.split(":", 1)[1]
        count = torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise InputError(f"device {name!r} does not exist: this machine has cuda:0..cuda:{count - 1}")
    elif name.startswith("cuda") and name != "cuda":
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


#: inference precisions: "auto" = bfloat16 where the hardware computes it natively, else float32
PRECISIONS = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 matrix products in hardware (x86 AMX-BF16 or AVX512-BF16).

    Read from ``/proc/cpuinfo`` (Linux) once per process; False elsewhere or when unreadable.
    On such CPUs bfloat16 convolutions run 2-3x faster than float32 (oneDNN);
    on others they would be emulated, and slower.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def cuda_has_native_bf16(device: str = "cuda") -> bool:
    """True when the CUDA GPU ``device`` computes bfloat16 in hardware (compute capability 8.0 or
    newer: A100, H100, RTX 30xx and later). Older GPUs (V100, T4, RTX 20xx) would emulate it, slowly
    (``torch.cuda.is_bf16_supported()`` says True for them too): they get float16 instead."""
    import torch

    if not torch.cuda.is_available():
        return False
    index = torch.device(device).index
    major, _ = torch.cuda.get_device_capability(torch.cuda.current_device() if index is None else index)
    return major >= 8


def resolve_precision(precision: str, device: str) -> str:
    """``"float32"`` or ``"bfloat16"`` for inference on ``device`` (a torch device string).

    ``"auto"``: bfloat16 on CUDA and on CPUs with native bfloat16 (:func:`cpu_has_native_bf16`),
    float32 otherwise (including MPS). On a CUDA GPU without native bfloat16
    (:func:`cuda_has_native_bf16`) "bfloat16" runs the network in float16 autocast instead. Raises ``ValueError`` for an unknown name.
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bfloat16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def network_precision(precision: str, device: str) -> str:
    """The dtype the network really runs in on ``device``: ``"float32"``, ``"bfloat16"`` or
    ``"float16"`` (:func:`resolve_precision`, except that "bfloat16" on a CUDA GPU without native
    bfloat16 runs as float16 autocast: tensor cores either way, no slow emulation)."""
    use = resolve_precision(precision, device)
    if use == "bfloat16" and device.startswith("cuda") and not cuda_has_native_bf16(device):
        return "float16"
    return use
