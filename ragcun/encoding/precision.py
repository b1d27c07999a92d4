"""Encode with the transformer in bfloat16 (``torch.autocast``) and everything after it in float32.

On CPUs with AMX / AVX512-BF16 bfloat16 matmuls make encoding several times faster, which decides whether a
corpus can be evaluated at all on a CPU. Only the transformer runs under autocast (its weights stay float32);
its token embeddings are cast back to float32 before pooling and the projection, so the final rounding to
bfloat16's 8-bit mantissa does not land on the embeddings that distances are computed from. EmbeddingGemma
supports bfloat16 (not float16).

bfloat16 is fast only where the hardware computes it: measured 2.5x faster than float32 on a CPU with AMX, and
6x *slower* on an AMD EPYC without AVX-512, where it is emulated. ``"auto"`` picks bfloat16 only on such
hardware, and asking for bfloat16 elsewhere warns.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
PRECISION_CHOICES: tuple[str, ...] = (*PRECISIONS, "auto")
# CPU flags (Linux /proc/cpuinfo) of instructions that compute bfloat16 natively
NATIVE_BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX / AVX512-BF16; Arm's "bf16"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    return precision


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags, empty where the OS does not list them."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 lists "flags", Arm "Features"
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bfloat16(device_type: str = "cpu", flags: frozenset[str] | None = None) -> bool:
    """Whether ``device_type`` computes bfloat16 matmuls in hardware (CUDA: the GPU says; CPU: AMX or
    AVX512-BF16 on x86, BF16 on Arm)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BFLOAT16_CPU_FLAGS)


def resolve_precision(precision: str, device_type: str = "cpu", flags: frozenset[str] | None = None) -> str:
    """``"auto"`` becomes bfloat16 where it is native and float32 elsewhere; bfloat16 asked for where it is
    emulated is kept (results stay comparable with other machines) but warned about."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device_type, flags) else "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}.")
    if precision == "bfloat16" and not native_bfloat16(device_type, flags):
        warnings.warn(
            f"precision bfloat16 on a {device_type.upper()} without native bfloat16 (no AMX / AVX512-BF16): it is "
            "emulated, and was measured 6x slower than float32 on such a CPU. Use --precision float32 (or auto).",
            stacklevel=2,
        )
    return precision


def precision_tag(precision: str, separator: str) -> str:
    """What names results of ``precision`` apart (cache keys, MTEB revisions): nothing for float32, so results
    computed before precisions existed keep their names."""
    return "" if check_precision(precision) == "float32" else f"{separator}{precision}"


def set_encoding_precision(model: SentenceTransformer, precision: str) -> SentenceTransformer:
    """Switch the model's first module (the transformer) to ``precision`` for inference; returns the model.

    Idempotent and reversible: ``"float32"`` restores the module's own forward.
    """
    check_precision(precision)
    transformer = model[0]
    if getattr(vars(transformer).get("forward"), "under_bfloat16_autocast", False):
        del transformer.forward  # back to the class's forward
    if precision == "float32":
        return model
    original = transformer.forward

    def forward_under_autocast(features: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        device_type = next(transformer.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            output = original(features, *args, **kwargs)
        return {
            key: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in output.items()
        }

    forward_under_autocast.under_bfloat16_autocast = True  # type: ignore[attr-defined]
    transformer.forward = forward_under_autocast
    return model


@contextlib.contextmanager
def encoding_precision(model: SentenceTransformer, precision: str) -> Iterator[SentenceTransformer]:
    """``model`` encoding in ``precision`` inside the block, back in float32 (its own forward) after it, even on an
    error: a frozen base encodes its cache in bfloat16 and is then saved, as released, inside a trained stack."""
    set_encoding_precision(model, precision)
    try:
        yield model
    finally:
        set_encoding_precision(model, "float32")
