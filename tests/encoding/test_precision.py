"""bfloat16 encoding: close to float32, float32 embeddings out, reversible, cached and MTEB-stored apart from float32."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import evaluate
from ragcun.encoding.precision import resolve_precision, set_encoding_precision
from tests.helpers import tiny_texts
from tests.helpers import write_topic_beir as write_beir


def test_bfloat16_agrees_with_float32_and_is_reversible(tiny_base_dir: Path) -> None:
    model = SentenceTransformer(str(tiny_base_dir), device="cpu")
    _, passages = tiny_texts()
    reference = model.encode(passages, convert_to_tensor=True)
    seen_dtypes: list[torch.dtype] = []
    hook = model[1].register_forward_pre_hook(lambda _m, args: seen_dtypes.append(args[0]["token_embeddings"].dtype))
    set_encoding_precision(model, "bfloat16")
    set_encoding_precision(model, "bfloat16")  # idempotent: not autocast nested in autocast
    low = model.encode(passages, convert_to_tensor=True)
    hook.remove()
    assert low.dtype == torch.float32 and seen_dtypes and set(seen_dtypes) == {torch.float32}
    assert not torch.equal(low, reference)  # it did run in bfloat16
    cosine = torch.nn.functional.cosine_similarity(low, reference)
    assert cosine.min() > 0.99
    set_encoding_precision(model, "float32")
    assert torch.equal(model.encode(passages, convert_to_tensor=True), reference)


def test_unknown_precision_is_refused(tiny_base_dir: Path) -> None:
    model = SentenceTransformer(str(tiny_base_dir), device="cpu")
    with pytest.raises(ValueError, match="Unknown precision 'float16'; use one of float32, bfloat16"):
        set_encoding_precision(model, "float16")


@pytest.mark.parametrize(
    "flags, expected",
    [({"avx2", "amx_bf16"}, "bfloat16"), ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"avx2", "avx512f"}, "float32")],
)
def test_auto_picks_bfloat16_only_where_the_cpu_computes_it(flags, expected) -> None:
    assert resolve_precision("auto", "cpu", frozenset(flags)) == expected


def test_bfloat16_on_an_emulating_cpu_warns_and_is_kept() -> None:
    with pytest.warns(UserWarning, match="without native bfloat16.*6x slower.*float32"):
        assert resolve_precision("bfloat16", "cpu", frozenset({"avx2"})) == "bfloat16"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bfloat16", "cpu", frozenset({"amx_bf16"})) == "bfloat16"
        assert resolve_precision("float32", "cpu", frozenset()) == "float32"
    with pytest.raises(ValueError, match="use one of float32, bfloat16, auto"):
        resolve_precision("float16")


def test_evaluate_caches_bfloat16_apart_and_reports_close_scores(two_models, tmp_path: Path) -> None:
    tuned, _ = two_models
    data = write_beir(tmp_path / "tinybeir")
    cache = tmp_path / "cache"
    scores = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        evaluate.main(["--model", tuned, "--name", "ragcun", "--data", str(data), "--output-dir", str(out),
                       "--cache-dir", str(cache), "--precision", precision, "--mteb-local",
                       "--mteb-output", str(tmp_path / "mteb")])
        row = next(csv.DictReader((out / "rag_performance_comparison.csv").open()))
        scores[precision] = float(row["ndcg@10"])
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 4  # queries and corpus, once per precision
    arrays = [np.load(f) for f in files]
    assert all(a.dtype == np.float32 for a in arrays)
    assert abs(scores["bfloat16"] - scores["float32"]) < 0.05
    revisions = sorted(p.name for p in (tmp_path / "mteb" / "ragcun-eval__ragcun").iterdir() if p.is_dir())
    assert len(revisions) == 2 and revisions[1] == f"{revisions[0]}-bfloat16"  # never read back for the other
