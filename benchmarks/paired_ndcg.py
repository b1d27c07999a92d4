"""Is one system's nDCG@10 really above another's? Paired per-query comparison on one BEIR split.

A gap of a point or two between two fine-tunes on 300 queries can be noise. This scores every system on
the same queries (the embeddings ``evaluate.py`` cached, found under the same ``NAME``, cap and precision,
or encoded now), then reports each one's mean difference from the first system with a paired-bootstrap
95% interval and a sign-flip p-value (``ragcun.evaluation.stats.paired_difference``).

    python benchmarks/paired_ndcg.py --data ../shared/data/scifact --max-seq-length 256 \\
        --system minilm-lambda-0.01=output/minilm-sweep/lambda-0.01/final \\
        --system minilm-lambda-0.1=output/minilm-sweep/lambda-0.1/final
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ragcun.encoding.precision import PRECISION_CHOICES, resolve_precision
from ragcun.evaluation.beir import load_beir
from ragcun.evaluation.metrics import ndcg_per_query, rank
from ragcun.evaluation.reports import embedding_key, encode_dataset, load_for_evaluation, model_similarity
from ragcun.evaluation.stats import paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--system", action="append", required=True, metavar="NAME=PATH",
                        help="the name evaluate.py reported it under, and its model; the first is the reference")
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--precision", default="float32", choices=PRECISION_CHOICES,
                        help="as evaluate.py encoded (auto: bfloat16 where the CPU computes it natively)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "ragcun" / "embeddings")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    args.precision = resolve_precision(args.precision, "cpu")
    systems = []
    for spec in args.system:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            parser.error(f"--system {spec!r}: write NAME=PATH, e.g. --system base=~/.cache/ragcun/embeddinggemma-300m")
        systems.append((name, str(Path(path).expanduser())))
    if len(systems) < 2:
        parser.error("give at least two --system: the reference first, then the systems to compare with it")
    split = load_beir(args.data, args.split)
    scores = {}
    for name, path in systems:
        model = load_for_evaluation(path, args.max_seq_length, args.precision)
        queries, documents = encode_dataset(model, embedding_key(path, name, args.precision), split, args.cache_dir, 32)
        ranking = rank(queries, documents, model_similarity(model), depth=100)
        scores[name] = ndcg_per_query(ranking, split)
    reference = systems[0][0]
    print(f"{args.data.name} {args.split}: {len(split.query_ids)} queries; nDCG@10, difference from {reference} "
          f"(paired bootstrap 95% interval, sign-flip p over {args.resamples} resamples)")
    for name, _ in systems:
        mean = sum(scores[name].values()) / len(scores[name])
        if name == reference:
            print(f"{name:<28}{mean:>8.4f}")
            continue
        diff = paired_difference(scores[reference], scores[name], resamples=args.resamples)
        print(f"{name:<28}{mean:>8.4f}  {diff.mean:+.4f}  [{diff.low:+.4f}, {diff.high:+.4f}]  p={diff.p_value:.3f}")


if __name__ == "__main__":
    main()
