"""Evaluate models side by side: isotropy, retrieval, separation, calibration, and MTEB.

    python evaluate.py --model output/run/final --baseline ~/.cache/ragcun/embeddinggemma-300m \
        --data ../shared/data/scifact --output-dir data/processed [--whiten] [--mteb-tasks SciFact ...]

Each model keeps its own similarity and prompts. Reports: isotropy_comparison.csv/.png,
rag_performance_comparison.csv, rag_performance.png, reliability.png, report.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="model path or Hub id (repeatable)")
    parser.add_argument("--baseline", action="append", default=[], help="baseline model path or Hub id (repeatable)")
    parser.add_argument("--name", action="append", default=[],
                        help="display names, in the order --model ... then --baseline ... (default: folder names)")
    parser.add_argument("--data", action="append", default=[], type=Path, help="BEIR folder (repeatable)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output-dir", type=Path, default=Path("data/processed"))
    parser.add_argument("--max-seq-length", type=int, default=256, help="the same cap for every model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default ~/.cache/ragcun/embeddings)")
    parser.add_argument("--whiten", action="store_true", help="add each model + post-hoc whitening fitted on the corpus")
    return parser.parse_args(argv)


def display_names(paths: list[str], names: list[str]) -> list[str]:
    if names and len(names) != len(paths):
        raise ValueError(f"--name was given {len(names)} times for {len(paths)} models; give one per model or none.")
    result = names or [Path(p.rstrip("/")).name if Path(p).name != "final" else Path(p).parent.name for p in paths]
    if len(set(result)) != len(result):
        raise ValueError(f"Model display names collide: {result}. Set them with --name.")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ragcun.reports import evaluate_models

    paths = [*args.model, *args.baseline]
    try:
        if not args.data:
            raise ValueError("Nothing to evaluate on: pass --data BEIR_FOLDER (repeatable).")
        models = dict(zip(display_names(paths, args.name), paths))
        systems = evaluate_models(models, args.data, args.output_dir, split_name=args.split,
                                  max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                                  cache_dir=args.cache_dir, whiten=args.whiten)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"evaluate.py: error: {error}")
    for system in systems:
        m = system.metrics
        print(f"{system.name:<32} {system.dataset:<20} {system.similarity:<9} nDCG@10 {m['ndcg@10']:.4f}  "
              f"R@10 {m['recall@10']:.4f}  MRR@10 {m['mrr@10']:.4f}  sep(std) {m['separation_standardized']:.3f}  "
              f"AUC {m['separation_auc']:.3f}  null KS {m['null_ks']:.3f}  ECE {m['ece']:.4f}")
    print(f"reports written to {args.output_dir}{os.sep}")


if __name__ == "__main__":
    main()
