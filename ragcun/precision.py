"""Encode with the transformer in bfloat16 (``torch.autocast``) and everything after it in float32.

On CPUs with AMX / AVX512-BF16 bfloat16 matmuls make encoding several times faster, which decides whether a
corpus can be evaluated at all on a CPU. Only the transformer runs under autocast (its weights stay float32);
its token embeddings are cast back to float32 before pooling and the projection, so the final rounding to
bfloat16's 8-bit mantissa does not land on the embeddings that distances are computed from. EmbeddingGemma
supports bfloat16 (not float16).
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformer

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
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
