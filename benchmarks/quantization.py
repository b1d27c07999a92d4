"""What does N(0, I) buy per bit? Compressed search on real corpora, base vs ragcun, at equal bytes per document.

The claim to test: isotropic embeddings lose less per bit, because balanced, decorrelated sign bits carry one bit
each. For every system (its embeddings as ``evaluate.py`` cached them under the same NAME, cap and precision, or
encoded now) and corpus, each code is searched and scored against the system's own exact search:

- ``float32``: exact search in the system's own similarity, the reference (4·D bytes per document).
- int8 (D bytes), searched by L2 on the integer codes:
  ``int8-fixed``: the range N(0, 1) implies, known before any data (x·32 rounded, clipped at ±127, i.e. ±3.97σ;
  only meaningful for a model trained towards N(0, I)); ``int8-st``: sentence-transformers' ``quantize_embeddings``
  int8 with the corpus as calibration data (per-dimension min/max).
- 1 bit per dimension (D/8 bytes), searched by Hamming distance: ``sign``: signs about the origin (what
  sentence-transformers' ``binary`` precision stores); ``sign-centred``: signs about the corpus mean, the cheap fix
  a user of any model can apply. Each also with an exact rerank of ``factor × 10`` Hamming candidates
  (``+rerank F``: the float vectors read from disk, only the codes in RAM).

Printed per row: bytes per document in RAM, recall@10 against the system's own exact top 10, nDCG@10 (pytrec_eval),
and for sign codes the mean |P(bit = 1) − ½| over dimensions (balance) and the rms correlation between bits.

    python benchmarks/quantization.py --data ../shared/data/scifact --data ../shared/data/trec-dl19-passage \\
        --max-seq-length 256 --system minilm-base="$MINI" --system sigreg-random=output/.../final \\
        --frozen-base "$MINI" --out docs/results/quantization-minilm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ragcun.encoding.cache import DEFAULT_CACHE_DIR
from ragcun.evaluation import metrics as evaluation
from ragcun.evaluation.beir import BeirSplit, load_beir
from ragcun.evaluation.reports import (
    embedding_key,
    encode_dataset,
    load_for_evaluation,
    memoized_base,
    model_similarity,
    relevance_threshold,
    with_memoized_base,
)
from ragcun.io import atomic_write_text

FIXED_INT8_SCALE = 32.0  # int8 steps per standard deviation of N(0, 1): ±127 covers ±3.97σ
RERANK_FACTORS = (1, 4, 10)
TOP_K = 10


def fixed_int8(vectors: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(vectors * FIXED_INT8_SCALE), -127, 127).astype(np.int8)


def st_int8(vectors: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    from sentence_transformers.util.quantization import quantize_embeddings

    return quantize_embeddings(vectors.astype(np.float32), "int8", calibration_embeddings=calibration.astype(np.float32))


def signs(vectors: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """±1 per dimension (the unpacked sign code); Hamming distance = (D − s_q·s_d) / 2."""
    shifted = vectors if centre is None else vectors - centre
    return np.where(shifted > 0, 1.0, -1.0).astype(np.float32)


def bit_statistics(codes: np.ndarray) -> dict[str, float]:
    bits = codes > 0
    balance = float(np.abs(bits.mean(axis=0) - 0.5).mean())
    varying = bits.std(axis=0) > 0
    correlation = np.corrcoef(bits[:, varying], rowvar=False) if varying.sum() > 1 else np.zeros((1, 1))
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    return {"bit_balance": balance, "bit_corr_rms": float(np.sqrt(np.mean(off_diagonal**2))) if off_diagonal.size else 0.0,
            "constant_bits": int((~varying).sum())}


def top_by_score(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``depth`` per row, higher score first; ties by document index (as a heap over the corpus would)."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :depth]
    return order, np.take_along_axis(scores, order, axis=1)


def rerank(queries: np.ndarray, documents: np.ndarray, candidates: np.ndarray, similarity: str) -> evaluation.Ranking:
    rows = [evaluation.similarity_scores(queries[i : i + 1], documents[candidates[i]], similarity)[0]
            for i in range(len(queries))]
    scores = np.stack(rows)
    order = np.argsort(-scores, axis=1, kind="stable")
    return evaluation.Ranking(np.take_along_axis(candidates, order, axis=1), np.take_along_axis(scores, order, axis=1))


def recall_against(ranking: evaluation.Ranking, exact: evaluation.Ranking) -> float:
    found, truth = ranking.indices[:, :TOP_K], exact.indices[:, :TOP_K]
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


def compressed_rows(queries: np.ndarray, documents: np.ndarray, similarity: str, split: BeirSplit) -> list[dict]:
    threshold = relevance_threshold(split)
    dim = documents.shape[1]
    depth = max(RERANK_FACTORS) * TOP_K
    exact = evaluation.rank(queries, documents, similarity, depth=100)

    def row(code: str, bytes_per_document: float, ranking: evaluation.Ranking, **extra) -> dict:
        metrics = evaluation.retrieval_metrics(ranking, split, threshold)
        return {"code": code, "bytes_per_doc": bytes_per_document, "recall@10_vs_exact": recall_against(ranking, exact),
                "ndcg@10": metrics["ndcg@10"], **extra}

    rows = [row("float32", 4 * dim, exact)]
    for code, (q, d) in {"int8-fixed": (fixed_int8(queries), fixed_int8(documents)),
                         "int8-st": (st_int8(queries, documents), st_int8(documents, documents))}.items():
        rows.append(row(code, dim, evaluation.rank(q.astype(np.float32), d.astype(np.float32), "euclidean", depth=100)))
    for code, centre in (("sign", None), ("sign-centred", documents.mean(axis=0))):
        q_codes, d_codes = signs(queries, centre), signs(documents, centre)
        stats = bit_statistics(d_codes)
        candidates, agreement = top_by_score(q_codes @ d_codes.T, depth)
        rows.append(row(code, dim / 8, evaluation.Ranking(candidates, agreement), **stats))
        for factor in RERANK_FACTORS:
            ranking = rerank(queries, documents, candidates[:, : factor * TOP_K], similarity)
            rows.append(row(f"{code}+rerank {factor}", dim / 8, ranking, **stats))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", required=True, help="BEIR folder (repeatable)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--system", action="append", required=True, metavar="NAME=PATH",
                        help="the name evaluate.py reported it under (its cached embeddings), and its model")
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--frozen-base", help="heads on this base encode through its memoized embeddings")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, help="folder for quantization.json and quantization.md")
    args = parser.parse_args()
    memo = memoized_base(args.frozen_base, args.max_seq_length, "float32", args.cache_dir) if args.frozen_base else None
    results = []
    for folder in args.data:
        split = load_beir(folder, args.split)
        for spec in args.system:
            name, separator, path = spec.partition("=")
            if not separator or not name or not path:
                parser.error(f"--system {spec!r}: write NAME=PATH")
            path = str(Path(path).expanduser())
            model = with_memoized_base(load_for_evaluation(path, args.max_seq_length, "float32"), memo)
            queries, documents = encode_dataset(model, embedding_key(path, name, "float32"), split, args.cache_dir, 32)
            if memo is not None:
                memo.save_memo()
            similarity = model_similarity(model)
            for row in compressed_rows(queries, documents, similarity, split):
                results.append({"dataset": folder.name, "system": name, "similarity": similarity, "dim": documents.shape[1], **row})
                print(f"{folder.name:<20} {name:<18} {row['code']:<22} {row['bytes_per_doc']:>7.0f} B  "
                      f"R@10 vs exact {row['recall@10_vs_exact']:.3f}  nDCG@10 {row['ndcg@10']:.4f}"
                      + (f"  balance {row['bit_balance']:.3f}  bit corr {row['bit_corr_rms']:.3f}" if "bit_balance" in row else ""),
                      flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "quantization.json", json.dumps(results, indent=2) + "\n")
        columns = ["dataset", "system", "code", "bytes_per_doc", "recall@10_vs_exact", "ndcg@10", "bit_balance", "bit_corr_rms"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in results:
            lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns) + " |")
        atomic_write_text(args.out / "quantization.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
