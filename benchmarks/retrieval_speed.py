"""GaussianRetriever index types side by side: build time, memory per document, queries/s, recall@10.

Synthetic N(0, I_512) corpora (100k and 1M float32 vectors, generated in chunks), and optionally real
embeddings (``--scifact-embeddings corpus.npy [--scifact-queries queries.npy]``; without query embeddings
300 corpus rows are held out as queries). Every method is the real ``GaussianRetriever`` fed through
``add_embeddings`` / ``search_embeddings``, so the figures include its exact float64 rerank and hit building.

Workloads (``--workload``). For N(0, I) data and *random* queries the nearest neighbours are barely closer
than everything else (at D=512 the nearest of 1M points is ~0.7x the typical distance), which is not what
retrieval looks like.

- ``topics`` (default): a corpus with real neighbourhood structure. Topic centres c_t ~ N(0, I); each topic has
  10 documents x = ρ·c_t + √(1 − ρ²)·ε, and each query is a fresh member of a random topic, drawn the same way
  (ρ = 0.8: documents of one topic correlate 0.64, at distance ≈ 19 from each other against ≈ 32 from the
  rest). Every document is still marginally N(0, I) — what a ragcun model aims to output — and a query's
  exact top 10 is its topic's 10 documents, so ``R@10`` (the share of the exact top 10 found) is the figure
  that matters; ``topic@10`` checks the structure (the share of the top 10 in the query's topic).
- ``noisy-copy``: queries are noisy copies of corpus vectors, ``q = 0.6·x_i + 0.8·noise``. ``hit@10``: the
  source document x_i is in the top 10. Besides x_i the exact top 10 holds 9 documents only as close as chance
  makes them, which no compressed code can tell apart, so ``R@10`` is about 0.1 + 0.9·(luck) there: a workload
  nobody has, kept for comparison with earlier runs.

Everything runs on one thread (``faiss.omp_set_num_threads(1)`` and BLAS limited by threadpoolctl): on a
shared 2-core machine OpenMP spin-waiting made multi-threaded FAISS 3-70x slower and noisy. Memory per
document is what the index holds in RAM (``GaussianRetriever.memory_usage()``: arrays and FAISS
structures); ``RSS B/doc`` is the measured growth of the process' anonymous memory while building (large
allocations; small objects may reuse memory freed by the previous method), and the retriever's Python
bookkeeping (id and document lists, id dict: the same for every index type) is reported once per table. ``binary (disk)`` keeps the float vectors for the rerank in a memory-mapped file, so only the
64-byte codes stay in RAM; its queries then read from the OS page cache (warm here).

    python benchmarks/retrieval_speed.py                    # about 10 minutes on 2 cores
    python benchmarks/retrieval_speed.py --sizes 100000     # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ragcun.retrieval import GaussianRetriever  # noqa: E402
from ragcun.retrieval.config import _import_faiss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
QUERY_CORRELATION = 0.6  # corr(q, x_i) of the noisy-copy queries
TOPIC_RHO = 0.8  # loading of a topic document on its centre
TOPIC_SIZE = 10
TOP_K = 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_anon_bytes() -> int:
    """Resident anonymous memory of this process (heap, not file-backed mappings), from /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def gaussian_corpus(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corpus = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks: never a float64 copy of the whole corpus
        stop = min(n, start + 100_000)
        corpus[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    return corpus


def topic_corpus(n: int, dim: int, seed: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Topics of ``TOPIC_SIZE`` documents around N(0, I) centres, and queries drawn from random topics: the corpus,
    the queries, each document's topic and each query's topic. Generated in chunks (never a float64 copy)."""
    rng = np.random.default_rng(seed)
    topics = -(-n // TOPIC_SIZE)
    noise = np.sqrt(1 - TOPIC_RHO**2)
    corpus = np.empty((n, dim), dtype=np.float32)
    document_topics = np.arange(n) // TOPIC_SIZE
    centres = np.empty((topics, dim), dtype=np.float32)
    for start in range(0, topics, 10_000):
        stop = min(topics, start + 10_000)
        centres[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        corpus[start:stop] = TOPIC_RHO * centres[document_topics[start:stop]] + noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    query_topics = rng.choice(topics, size=queries, replace=False)
    query_vectors = TOPIC_RHO * centres[query_topics] + noise * rng.standard_normal((queries, dim), dtype=np.float32)
    return corpus, query_vectors.astype(np.float32), document_topics, query_topics


def noisy_copy_queries(corpus: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sources = rng.choice(len(corpus), size=count, replace=False)
    noise = rng.standard_normal((count, corpus.shape[1]), dtype=np.float32)
    rho = np.sqrt(1 - QUERY_CORRELATION**2)
    return (QUERY_CORRELATION * corpus[sources] + rho * noise).astype(np.float32), sources


def bookkeeping_bytes(retriever: GaussianRetriever) -> int:
    """Python-side per-document state of the retriever (id/document/metadata lists, the id dict, id ints);
    the document strings themselves are the caller's and not counted."""
    small = range(-5, 257)  # CPython caches these ints
    ids = sum(sys.getsizeof(i) for i in retriever._ids if not (isinstance(i, int) and i in small))
    lists = sum(sys.getsizeof(x) for x in (retriever._ids, retriever._documents, retriever._metadata))
    return ids + lists + sys.getsizeof(retriever._by_id)


def ids_of(results) -> np.ndarray:
    width = max(len(hits) for hits in results)
    return np.array([[hit.id for hit in hits] + [-1] * (width - len(hits)) for hits in results])


def measure(name: str, options: dict, corpus: np.ndarray, documents: list[str], queries: np.ndarray, n_single: int,
            n_batch: int, truth: np.ndarray | None, sources: np.ndarray | None, variants: dict | None = None,
            topics: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """Build one retriever, time it, and return a row for it (and one per search-time variant)."""
    gc.collect()
    rss_before = rss_anon_bytes()
    retriever = GaussianRetriever(**options)
    start = time.perf_counter()
    retriever.add_embeddings(corpus, documents)
    build = time.perf_counter() - start
    gc.collect()
    rss_growth = rss_anon_bytes() - rss_before
    memory = retriever.memory_usage()
    bookkeeping = bookkeeping_bytes(retriever) / len(corpus)
    rows = []
    for variant, settings in (variants or {"": {}}).items():
        for attribute, value in settings.items():
            setattr(retriever, attribute, value)
        retriever.search_embeddings(queries[:64], top_k=TOP_K)  # warm-up: first-call allocations, page cache
        start = time.perf_counter()
        for query in queries[:n_single]:
            retriever.search_embeddings(query, top_k=TOP_K)
        single = n_single / (time.perf_counter() - start)
        found = []
        start = time.perf_counter()
        for first in range(0, n_batch, 64):
            found.extend(retriever.search_embeddings(queries[first : first + 64], top_k=TOP_K))
        batch = n_batch / (time.perf_counter() - start)
        found_ids = ids_of(found)
        row = {
            "method": name + variant,
            "build_s": build,
            "ram_bytes_per_doc": memory["total"] / len(corpus),
            "rss_bytes_per_doc": rss_growth / len(corpus) if rss_before >= 0 else None,
            "memory_parts": memory,
            "bookkeeping_bytes_per_doc": bookkeeping,
            "qps_batch1": single,
            "qps_batch64": batch,
            "found": found_ids,
        }
        if sources is not None:
            row["hit_at_10"] = float(np.mean([s in f for s, f in zip(sources[:n_batch], found_ids.tolist())]))
        if topics is not None:
            document_topics, query_topics = topics
            row["topic_at_10"] = float(np.mean(document_topics[found_ids] == query_topics[:n_batch, None]))
        if truth is not None:
            row["recall_at_10"] = float(np.mean([len(set(f) & set(t)) / TOP_K for f, t in zip(found_ids.tolist(), truth.tolist())]))
        rows.append(row)
        log(f"    {row['method']:<24} build {build:7.1f}s  {memory['total'] / len(corpus):8.1f} B/doc  "
            f"{single:9.1f} q/s@1  {batch:9.1f} q/s@64")
    retriever.close()
    del retriever
    gc.collect()
    return rows


def run_corpus(label: str, corpus: np.ndarray, queries: np.ndarray, sources: np.ndarray | None, args, faiss_ok: bool,
               topics: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    n = len(corpus)
    n_single = args.queries1 if n <= 200_000 else max(20, args.queries1 // 2)
    n_batch = args.queries64 if n <= 200_000 else max(64, args.queries64 // 2)
    documents = [f"doc {i}" for i in range(n)]
    log(f"[{label}] N={n:,} D={corpus.shape[1]}: {n_single} single queries, {n_batch} in batches of 64")
    rows = measure("numpy exact", {"index": "flat", "backend": "numpy"}, corpus, documents, queries, n_single, n_batch, None, sources,
                   topics=topics)
    truth = rows[0]["found"]
    rows[0]["recall_at_10"] = 1.0
    methods = []
    if faiss_ok:
        methods.append(("FAISS flat", {"index": "flat", "backend": "faiss"}, None))
    backend = "faiss" if faiss_ok else "numpy"
    methods += [
        ("binary+rerank (RAM)", {"index": "binary", "backend": backend, "rerank_factor": 10}, None),
        ("binary+rerank (disk)", {"index": "binary", "backend": backend, "rerank_factor": 10, "rerank_storage": "disk"}, None),
    ]
    if faiss_ok and n <= args.ivf_max:
        nlist = round(4 * np.sqrt(n))
        methods.append(("IVF", {"index": "ivf"}, {f" nprobe={max(1, -(-nlist // 8))}": {}, f" nprobe={max(1, nlist // 32)}": {"nprobe": max(1, nlist // 32)}}))
    if faiss_ok and n <= args.hnsw_max:
        methods.append(("HNSW M=32", {"index": "hnsw"}, {" ef=128": {}, " ef=512": {"ef_search": 512}}))
    for name, options, variants in methods:
        rows += measure(name, options, corpus, documents, queries, n_single, n_batch, truth, sources, variants, topics)
    skipped = []
    if faiss_ok and n > args.ivf_max:
        skipped.append(f"IVF skipped above {args.ivf_max:,} vectors (--ivf-max)")
    if faiss_ok and n > args.hnsw_max:
        skipped.append(f"HNSW skipped above {args.hnsw_max:,} vectors (--hnsw-max): at 100k its single-thread build "
                       "already takes tens of seconds and grows ~N log N")
    return {"label": label, "n": n, "dim": int(corpus.shape[1]), "queries_batch1": n_single, "queries_batch64": n_batch,
            "rows": rows, "skipped": skipped}


def format_table(result: dict) -> list[str]:
    rows = result["rows"]
    reference = next((r for r in rows if r["method"] == "FAISS flat"), rows[0])
    lines = [
        f"== {result['label']}: N={result['n']:,}, D={result['dim']}; {result['queries_batch1']} queries at batch 1, "
        f"{result['queries_batch64']} at batch 64; ratios vs {reference['method']} ==",
        f"{'method':<28}{'build s':>8}{'RAM B/doc':>11}{'RSS B/doc':>11}{'mem x':>8}{'q/s @1':>10}{'x':>7}"
        f"{'q/s @64':>10}{'x':>7}{'hit@10':>8}{'topic@10':>9}{'R@10':>7}",
    ]
    for row in rows:
        rss = f"{row['rss_bytes_per_doc']:.0f}" if row.get("rss_bytes_per_doc") is not None else "-"
        hit = f"{row['hit_at_10']:.3f}" if "hit_at_10" in row else "-"
        topic = f"{row['topic_at_10']:.3f}" if "topic_at_10" in row else "-"
        lines.append(
            f"{row['method']:<28}{row['build_s']:>8.1f}{row['ram_bytes_per_doc']:>11.1f}{rss:>11}"
            f"{reference['ram_bytes_per_doc'] / row['ram_bytes_per_doc']:>8.1f}"
            f"{row['qps_batch1']:>10.1f}{row['qps_batch1'] / reference['qps_batch1']:>7.1f}"
            f"{row['qps_batch64']:>10.1f}{row['qps_batch64'] / reference['qps_batch64']:>7.1f}"
            f"{hit:>8}{topic:>9}{row['recall_at_10']:>7.3f}"
        )
    lines.append(f"  (Python bookkeeping, every method alike: {rows[0]['bookkeeping_bytes_per_doc']:.0f} B/doc, document strings not counted)")
    lines += [f"  ({note})" for note in result["skipped"]]
    return lines


def targets(result: dict) -> list[str]:
    rows = {r["method"]: r for r in result["rows"]}
    flat = rows.get("FAISS flat")
    if flat is None:
        return ["targets: not evaluated (no FAISS flat row)"]
    lines = [f"Targets at N={result['n']:,} (binary+rerank vs FAISS flat: recall@10 >= 0.95, >= 16x less memory, >= 3x queries/s):"]
    for name in ("binary+rerank (RAM)", "binary+rerank (disk)"):
        row = rows[name]
        memory = flat["ram_bytes_per_doc"] / row["ram_bytes_per_doc"]
        rss_flat, rss_row = flat.get("rss_bytes_per_doc"), row.get("rss_bytes_per_doc")
        rss = "n/a" if rss_flat is None or rss_row is None else (f"{rss_flat / rss_row:.1f}x" if rss_row >= 1 else "growth < 1 B/doc")
        speed1, speed64 = row["qps_batch1"] / flat["qps_batch1"], row["qps_batch64"] / flat["qps_batch64"]
        checks = [f"hit@10 {row['hit_at_10']:.3f} {'met' if row['hit_at_10'] >= 0.95 else 'NOT met'}"] if "hit_at_10" in row else []
        checks += [
            f"R@10 {row['recall_at_10']:.3f} {'met' if row['recall_at_10'] >= 0.95 else 'NOT met'}",
            f"index memory {memory:.1f}x {'met' if memory >= 16 else 'NOT met'} (measured RSS growth: {rss})",
            f"q/s {speed1:.1f}x @1, {speed64:.1f}x @64 {'met' if min(speed1, speed64) >= 3 else 'NOT met'}",
        ]
        lines.append(f"  {name}: " + "; ".join(checks))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000],
                        help="synthetic corpus sizes; give none to run only the real embeddings")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--workload", choices=("topics", "noisy-copy"), default="topics",
                        help="synthetic corpus and queries (see the module docstring)")
    parser.add_argument("--queries1", type=int, default=200, help="batch-1 queries (halved above 200k documents)")
    parser.add_argument("--queries64", type=int, default=256, help="batch-64 queries (halved above 200k documents)")
    parser.add_argument("--ivf-max", type=int, default=1_000_000)
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--scifact-embeddings", type=Path, help="(N, D) float .npy of real document embeddings")
    parser.add_argument("--scifact-queries", type=Path, help="(Q, D) float .npy of query embeddings (default: hold out 300 docs)")
    parser.add_argument("--output", type=Path, default=RESULTS / "retrieval_speed")
    args = parser.parse_args()

    faiss = _import_faiss()
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=1)
    except ImportError:
        limiter = None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    results = []
    for size in args.sizes:
        if args.workload == "topics":
            corpus, queries, document_topics, query_topics = topic_corpus(size, args.dim, size, max(args.queries1, args.queries64))
            label = f"N(0, I_{args.dim}) marginally, topics of {TOPIC_SIZE} (rho {TOPIC_RHO}), queries from random topics"
            results.append(run_corpus(label, corpus, queries, None, args, faiss is not None, (document_topics, query_topics)))
        else:
            corpus = gaussian_corpus(size, args.dim, seed=size)
            queries, sources = noisy_copy_queries(corpus, max(args.queries1, args.queries64), seed=size + 1)
            results.append(run_corpus(f"N(0, I_{args.dim}), noisy-copy queries (corr {QUERY_CORRELATION})", corpus, queries, sources, args, faiss is not None))
        del corpus
        gc.collect()
    if args.scifact_embeddings:
        corpus = np.load(args.scifact_embeddings, allow_pickle=False).astype(np.float32)
        if args.scifact_queries:
            queries = np.load(args.scifact_queries, allow_pickle=False).astype(np.float32)
        else:
            held_out = np.random.default_rng(0).choice(len(corpus), size=300, replace=False)
            queries, corpus = corpus[held_out], np.delete(corpus, held_out, axis=0)
        results.append(run_corpus(f"real embeddings ({args.scifact_embeddings.name})", corpus, queries, None, args, faiss is not None))
    total = time.perf_counter() - started
    if limiter is not None:
        limiter.restore_original_limits()

    lines = [
        "GaussianRetriever index types, one thread each (FAISS OpenMP and BLAS limited to 1); "
        f"faiss {getattr(faiss, '__version__', 'missing')}, numpy {np.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; top_k={TOP_K}; binary rerank_factor=10; total {total / 60:.1f} min",
        "RAM B/doc: index structures held in RAM; RSS B/doc: measured anonymous-memory growth while building "
        "(large allocations; small Python objects may reuse memory freed by the previous method); 'mem x': how many "
        "times less index RAM than flat. On top of either, the retriever's Python bookkeeping (id and document "
        "lists, id dict) costs the same for every index type: see the line under each table.",
        "hit@10: the query's source document in the top 10 (noisy-copy); topic@10: share of the top 10 in the query's "
        "topic (topics); R@10: share of the exact top 10 found (exact = numpy).",
        "",
    ]
    for result in results:
        lines += format_table(result)
        lines += targets(result)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    for result in results:
        for row in result["rows"]:
            row.pop("found", None)
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "total_s": total,
               "query_correlation": QUERY_CORRELATION, "topic_rho": TOPIC_RHO, "topic_size": TOPIC_SIZE, "results": results}
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
