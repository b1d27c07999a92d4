"""``ragcun-evaluate`` / ``python evaluate.py``: models side by side on isotropy, retrieval, separation,
calibration, and MTEB.

    ragcun-evaluate --model output/run/final --baseline ~/.cache/ragcun/embeddinggemma-300m \
        --data ../shared/data/scifact --output_dir data/processed [--whiten] [--mteb_tasks SciFact ...]

Each model keeps its own similarity and prompts. Reports: isotropy_comparison.csv/.png,
rag_performance_comparison.csv, rag_performance.png, reliability.png, report.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options are spelled as ragcun-train's (snake_case, as transformers' scripts): the same name for the same idea
    (``--encode_precision``, ``--embedding_cache_dir``, ``--max_seq_length``); the earlier spellings (``--precision``,
    ``--cache-dir``, ``--output-dir``, ...) are still accepted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="model path or Hub id (repeatable)")
    parser.add_argument("--baseline", action="append", default=[], help="baseline model path or Hub id (repeatable)")
    parser.add_argument("--name", action="append", default=[],
                        help="display names, in the order --model ... then --baseline ... (default: folder names); "
                             "also the MTEB model name ('org/name' as given, else 'ragcun-eval/<name>')")
    parser.add_argument("--data", action="append", default=[], type=Path, help="BEIR folder (repeatable)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output_dir", "--output-dir", type=Path, default=Path("data/processed"))
    parser.add_argument("--max_seq_length", "--max-seq-length", type=int, default=256, help="the same cap for every model")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=32)
    parser.add_argument("--encode_precision", "--precision", choices=("float32", "bfloat16", "auto"), default="float32",
                        help="bfloat16: the transformer under bfloat16 autocast, pooling and projection in float32 "
                             "(several times faster on CPUs with AMX, several times slower on CPUs without native "
                             "bfloat16, where it warns); auto: bfloat16 where native, else float32. The same for "
                             "every model")
    parser.add_argument("--embedding_cache_dir", "--cache_dir", "--cache-dir", type=Path, default=None,
                        help="embedding cache (default ~/.cache/ragcun/embeddings; shared with ragcun-train)")
    parser.add_argument("--frozen_base", "--frozen-base", default=None,
                        help="the frozen base of head-only models: every model that is a head on it encodes through "
                             "its memoized embeddings (the base encodes each text once for all of them; kept in the "
                             "cache dir); other models encode as usual")
    parser.add_argument("--revision", action="append", default=[], metavar="HUB_ID=REVISION",
                        help="pin a model or frozen base given by Hub id to a branch, tag or 40-hex commit (repeatable): "
                             "loaded at it, its cached embeddings keyed by that commit. Default: the commit the local "
                             "Hugging Face cache holds; needed only when that cannot be read offline")
    parser.add_argument("--whiten", action="store_true", help="add each model + post-hoc whitening fitted on the corpus")
    parser.add_argument("--whiten_dim", "--whiten-dim", type=int, help="whiten to this many dimensions (default: the model's width)")
    parser.add_argument("--mteb_tasks", "--mteb-tasks", nargs="+", default=[], help="MTEB task names, run with mteb.evaluate (Hub data)")
    parser.add_argument("--mteb_local", "--mteb-local", action="store_true", help="also run each --data folder as an MTEB retrieval task")
    parser.add_argument("--sts", type=Path, default=None, help="an STS Benchmark folder, run as an MTEB STS task")
    parser.add_argument("--mteb_output", "--mteb-output", type=Path, default=None, help="MTEB results folder (default OUTPUT_DIR/mteb)")
    args = parser.parse_args(argv)
    try:
        args.revision = pinned_revisions(args.revision)  # {Hub id: revision}, checked before anything loads
    except ValueError as error:
        parser.error(str(error))
    return args


def run_mteb_tasks(args: argparse.Namespace, models: dict[str, str], memo=None) -> dict[str, dict[str, float]]:
    """Named MTEB tasks and local folders through mteb, each model under its own explicit name."""
    from ragcun.evaluation.mteb import beir_retrieval_task, resolve_tasks, run_mteb, sts_task
    from ragcun.evaluation.reports import load_for_evaluation, with_memoized_base
    from ragcun.identity import weights_revision

    tasks: list = list(resolve_tasks(args.mteb_tasks)) if args.mteb_tasks else []  # unknown names fail here
    if args.mteb_local:
        tasks += [beir_retrieval_task(folder, split=args.split) for folder in args.data]
    if args.sts is not None:
        tasks.append(sts_task(args.sts, split=args.split))
    if not tasks:
        return {}
    output = args.mteb_output or args.output_dir / "mteb"
    scores = {}
    for name, path in models.items():
        model = load_for_evaluation(path, args.max_seq_length, args.encode_precision, args.revision.get(path))
        # the precision is part of the revision: bfloat16 results never stand in for float32 ones, or back
        revision = weights_revision(model, args.encode_precision)
        # an explicit name per model: a fine-tuned model never reads back its base model's cached results
        scores[name] = run_mteb(with_memoized_base(model, memo), tasks, output,
                                model_name=name if "/" in name else f"ragcun-eval/{name}", revision=revision)
        if memo is not None:
            memo.save_memo()
    return scores


def frozen_base_memo(args: argparse.Namespace):
    """The memoized frozen base of --frozen-base, at the evaluation's token cap and precision (None without it)."""
    if args.frozen_base is None:
        return None
    from ragcun.evaluation.reports import memoized_base

    return memoized_base(args.frozen_base, args.max_seq_length, args.encode_precision, args.embedding_cache_dir,
                         args.batch_size, args.revision.get(args.frozen_base))


def pinned_revisions(given_options: list[str]) -> dict[str, str]:
    """``--revision HUB_ID=REVISION`` options as {Hub id: revision}."""
    pinned = {}
    for given in given_options:
        hub_id, separator, revision = given.partition("=")
        if not (separator and hub_id and revision):
            raise ValueError(f"--revision {given!r}: write HUB_ID=REVISION, e.g. --revision org/model=<40-hex commit>.")
        pinned[hub_id] = revision
    return pinned


def display_names(paths: list[str], names: list[str]) -> list[str]:
    if names and len(names) != len(paths):
        raise ValueError(f"--name was given {len(names)} times for {len(paths)} models; give one per model or none.")
    result = names or [Path(p.rstrip("/")).name if Path(p).name != "final" else Path(p).parent.name for p in paths]
    if len(set(result)) != len(result):
        raise ValueError(f"Model display names collide: {result}. Set them with --name.")
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from ragcun.encoding.precision import resolve_precision
    from ragcun.evaluation.reports import evaluate_models

    args.encode_precision = resolve_precision(args.encode_precision, "cuda" if torch.cuda.is_available() else "cpu")
    print(f"encoding precision: {args.encode_precision}")

    paths = [*args.model, *args.baseline]
    try:
        if not args.data and not (args.mteb_tasks or args.sts):
            raise ValueError("Nothing to evaluate on: pass --data BEIR_FOLDER (repeatable), --sts or --mteb-tasks.")
        models = dict(zip(display_names(paths, args.name), paths))
        memo = frozen_base_memo(args)
        systems = []
        if args.data:
            systems = evaluate_models(models, args.data, args.output_dir, split_name=args.split,
                                      max_seq_length=args.max_seq_length, batch_size=args.batch_size,
                                      cache_dir=args.embedding_cache_dir, whiten=args.whiten,
                                      whiten_dim=args.whiten_dim, precision=args.encode_precision, memo=memo,
                                      revisions=args.revision)
        mteb_scores = run_mteb_tasks(args, models, memo)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")
    for system in systems:
        m = system.metrics
        print(f"{system.name:<32} {system.dataset:<20} {system.similarity:<9} nDCG@10 {m['ndcg@10']:.4f}  "
              f"R@10 {m['recall@10']:.4f}  MRR@10 {m['mrr@10']:.4f}  sep(std) {m['separation_standardized']:.3f}  "
              f"AUC {m['separation_auc']:.3f}  null KS {m['null_ks']:.3f}  ECE {m['ece']:.4f}")
    for name, scores in mteb_scores.items():
        for task, score in scores.items():
            print(f"MTEB {task:<28} {name:<32} main score {score:.4f}")
    print(f"reports written to {args.output_dir}{os.sep}")
