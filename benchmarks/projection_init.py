"""Which projection init retrieves best before any training? (whiten vs mrl vs random)

Encodes SciFact (test queries, corpus) with the base model once, caches the 768-d output of the
base's last Dense layer, then applies each init's 768->512 projection exactly as ``build_model``
would and scores nDCG@10 / Recall@10 / MRR@10 by L2 distance. The whitening is fitted on a sample
of the training triplets (out of domain for SciFact), as a user would fit it.

    python benchmarks/projection_init.py --model ~/.cache/ragcun/embeddinggemma-300m \
        --beir ../shared/data/scifact --train ../shared/data/train --max-seq-length 256
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from ragcun.encoding.cache import encode_cached
from ragcun.identity import embedding_identity
from ragcun.evaluation import metrics as evaluation
from ragcun.evaluation.beir import load_beir


def training_sample(train_dir: Path, size: int, seed: int) -> tuple[list[str], list[str]]:
    """Half queries, half passages (positives and negatives) from the jsonl triplets."""
    rows = []
    for path in sorted(train_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    queries = list(dict.fromkeys(r["query"] for r in rows))[: size // 2]
    passages = list(dict.fromkeys(t for r in rows for t in (r["pos"], r["neg"])))[: size // 2]
    return queries, passages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="base model id or local path")
    parser.add_argument("--beir", required=True, type=Path)
    parser.add_argument("--train", required=True, type=Path, help="folder of *.jsonl query/pos/neg triplets")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--output-dim", type=int, default=512)
    parser.add_argument("--fit-size", type=int, default=2000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "ragcun" / "embeddings")
    parser.add_argument("--encode-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-projected", type=Path, default=None,
                        help="also write the default (mrl, fit: train) projected queries/corpus as .npy here")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    started = time.time()
    released = SentenceTransformer(args.model, device="cpu")
    base = SentenceTransformer(
        modules=[m for m in released if not isinstance(m, Normalize)], prompts=released.prompts, device="cpu"
    )
    base.max_seq_length = args.max_seq_length
    model_id = embedding_identity(args.model, "unnormalized")  # its files or commit, not its name: a new release re-encodes
    split = load_beir(args.beir, "test")
    fit_queries, fit_passages = training_sample(args.train, args.fit_size, args.seed)

    def encode(texts: list[str], prompt: str) -> np.ndarray:
        return encode_cached(base, model_id, texts, prompt, args.cache_dir)

    fit = np.concatenate([encode(fit_queries, "query"), encode(fit_passages, "document")])
    queries = encode(split.query_texts, "query")
    corpus = encode(split.corpus_texts, "document")
    print(f"encoded in {time.time() - started:.0f}s: fit {fit.shape}, queries {queries.shape}, corpus {corpus.shape}")
    if args.encode_only:
        return
    report(fit, queries, corpus, split, args)


def report(fit: np.ndarray, queries: np.ndarray, corpus: np.ndarray, split, args: argparse.Namespace) -> None:
    from ragcun import fit_projection, isotropy_report

    systems = {"base, cosine (as released)": ("cosine", queries, corpus)}
    # in-domain variant: the same fits on a sample of the evaluation corpus itself (unsupervised)
    corpus_sample = corpus[np.random.default_rng(args.seed).permutation(len(corpus))[: args.fit_size]]
    for fit_name, fit_data in (("train", fit), ("corpus", corpus_sample)):
        for init in ("whiten", "mrl", "random"):
            if init == "random" and fit_name == "corpus":
                continue  # random uses no data
            weight, bias = fit_projection(fit_data, args.output_dim, init, seed=args.seed)
            w, b = weight.numpy(), bias.numpy()
            label = f"{init} -> {args.output_dim}, L2" + ("" if init == "random" else f" (fit: {fit_name})")
            systems[label] = ("euclidean", queries @ w.T + b, corpus @ w.T + b)
    rows = []
    for name, (similarity, q, d) in systems.items():
        metrics = evaluation.retrieval_metrics(evaluation.rank(q, d, similarity, depth=100), split)
        iso = isotropy_report(d, sigreg_slices=256)
        rows.append({"system": name, **metrics, "corpus_mean_norm": iso["mean_norm"],
                     "corpus_variance_mean": iso["variance_mean"], "corpus_cov_floor_ratio": iso["cov_floor_ratio"],
                     "corpus_is_isotropic": iso["is_isotropic"]})
    header = f"{'system':<36}{'nDCG@10':>9}{'R@10':>8}{'MRR@10':>8}{'|mean|':>9}{'var':>8}{'cov/floor':>11}{'iso':>6}"
    print(f"SciFact test ({len(split.query_ids)} queries, {len(split.corpus_ids)} docs), max_seq_length "
          f"{args.max_seq_length}; 'fit: train' = {len(fit)} texts of the training triplets, 'fit: corpus' = "
          f"{len(corpus_sample)} SciFact documents; isotropy figures on the whole corpus")
    print(header)
    for r in rows:
        print(f"{r['system']:<36}{r['ndcg@10']:>9.4f}{r['recall@10']:>8.4f}{r['mrr@10']:>8.4f}{r['corpus_mean_norm']:>9.2f}"
              f"{r['corpus_variance_mean']:>8.3f}{r['corpus_cov_floor_ratio']:>11.1f}{r['corpus_is_isotropic']!s:>6}")
    if args.save_projected is not None:
        weight, bias = fit_projection(fit, args.output_dim, "mrl", seed=args.seed)
        w, b = weight.numpy(), bias.numpy()
        args.save_projected.mkdir(parents=True, exist_ok=True)
        np.save(args.save_projected / "scifact_queries_mrl.npy", (queries @ w.T + b).astype(np.float32), allow_pickle=False)
        np.save(args.save_projected / "scifact_corpus_mrl.npy", (corpus @ w.T + b).astype(np.float32), allow_pickle=False)
    output = Path(__file__).parent / "results" / "projection_init_scifact.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
