"""Is a trained Gaussian head worth it? Its quality against its distance from N(0, I), beside what a user gets free.

Every head on a frozen base sits somewhere on two axes: retrieval quality (nDCG@10 on SciFact and DL19) and how far
its embeddings of new training-distribution text are from N(0, I) (‖Cov − I‖_F over its sampling floor, on the
held-out rows of the recipe: queries and documents, held out by query). The post-hoc alternative costs nothing to
train: the base's embeddings PCA-whitened with the eigenvalues tempered by γ (scaled by λ^(−γ/2), then to unit
average variance; γ 0 is the base's own ranking, γ 1 full whitening), fitted on the training embeddings. Training
is worth using only where its points lie above that curve.

    # 1. the post-hoc heads, saved as plain models (base + one Dense) so they are evaluated like the trained ones
    python benchmarks/head_frontier.py whiten --recipe recipes/minilm-head-mixed.yaml --base "$MINI" \\
        --out output/minilm-head-mixed/whitening
    # 2. evaluate.py --frozen-base "$MINI" --model ... --data scifact --data trec-dl19-passage --output-dir REPORTS
    # 3. the frontier: held-out isotropy of every system, nDCG@10 from evaluate.py's reports
    python benchmarks/head_frontier.py frontier --recipe recipes/minilm-head-mixed.yaml --base "$MINI" \\
        --system gamma-0=output/minilm-head-mixed/whitening/gamma-0 --system mnrl=output/.../final ... \\
        --reports REPORTS --out docs/results/frontier-minilm
    # 4. the held-out queries and documents apart (bases with a query prompt): where each mix's mean lies
    python benchmarks/head_frontier.py roles --recipe RECIPE --base BASE --system NAME=PATH ... --out OUT

The held-out rows and the training embeddings come from the same cached table head-only training used (the recipe
is loaded exactly as train.py loads it), so nothing is encoded again.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from torch import nn

from ragcun.encoding.cache import DEFAULT_CACHE_DIR
from ragcun.encoding.memoized_base import head_of
from ragcun.encoding.table import key_parts
from ragcun.encoding.precision import PRECISION_CHOICES, resolve_precision
from ragcun.isotropy import isotropy_report
from ragcun.model import load_base
from ragcun.training import head as head_training
from ragcun.training.data import load_training_data
from ragcun.training.recipe import Recipe, parse_recipe
from ragcun.training.run import check_before_loading, prepare_run
from ragcun.whitening import principal_axes, tempered_whitening

FIGURES = ("cov_floor_ratio", "mean_norm_excess", "variance_min", "variance_max", "offdiag_corr_excess", "sigreg",
           "is_isotropic", "marginal_ep_max", "marginal_ep_max_floor", "norm_ks", "is_gaussian")


def cached_table(recipe_path: str, base_path: str, encode_precision: str | None = None, heldout_texts: int = 0
                 ) -> tuple[SentenceTransformer, np.ndarray, np.ndarray, list[str]]:
    """The frozen base, its training embeddings, its held-out embeddings (queries and documents) and the held-out
    rows' texts as the base saw them (prompt + text), from the cache the recipe's head-only run filled (at the
    recipe's encode_precision unless given, as the heads were trained with ``--encode_precision``).

    ``heldout_texts`` above the recipe's held-out sample tops it up with rows the recipe never drew (see
    :func:`unseen_rows`), encoded by the base now and cached: a larger sample of the same distribution without
    changing the split the heads were trained on.
    """
    overrides = ["--encode_precision", encode_precision] if encode_precision else []
    recipe = parse_recipe(["--config", recipe_path, "--base_model", base_path, "--overwrite_output_dir", "true",
                           *overrides])
    prepared = prepare_run(recipe)
    base = load_base(base_path, revision=recipe.model.base_revision)
    if recipe.model.max_seq_length is not None:
        base.max_seq_length = recipe.model.max_seq_length
    prompts = dict(base.prompts)
    column_prompts = ({c: "query" if c == "anchor" else "document" for c in prepared.train_dataset.column_names}
                      if {"query", "document"} <= set(prompts) else None)
    groups = head_training.text_groups(prepared.train_dataset, prepared.eval_dataset, column_prompts, prompts)
    cache_dir = Path(recipe.model.embedding_cache_dir or DEFAULT_CACHE_DIR)
    precision = resolve_precision(recipe.model.encode_precision, "cpu")
    encoded = head_training.encode_once(base, str(Path(base_path).expanduser()), groups, cache_dir, batch_size=128,
                                        precision=precision, revision=recipe.model.base_revision)
    table, keys = encoded.read()
    keys = inline(keys)
    heldout_rows = np.setdiff1d(np.arange(len(table)), encoded.train_rows)
    heldout, heldout_keys = table[heldout_rows], [keys[row] for row in heldout_rows]
    if heldout_texts > len(heldout_keys):
        seen_anchors = set(prepared.train_dataset["anchor"]) | set(prepared.eval_dataset["anchor"])
        extra = unseen_rows(recipe, seen_anchors, set(keys), heldout_texts - len(heldout_keys), prompts)
        more = head_training.encode_once(base, str(Path(base_path).expanduser()), extra, cache_dir, batch_size=128,
                                         precision=precision, revision=recipe.model.base_revision)
        more_table, more_keys = more.read()
        heldout = np.concatenate([heldout, more_table])
        heldout_keys += inline(more_keys)
        print(f"held-out sample: {len(heldout_rows)} texts of the recipe's split + {len(heldout) - len(heldout_rows)} "
              "from rows it never drew", flush=True)
    return base, table[encoded.train_rows], heldout, heldout_keys


def inline(keys: list[str]) -> list[str]:
    """Table keys as the text the base saw: the prompt, then the text."""
    return ["".join(key_parts(key)) for key in keys]


def unseen_rows(recipe: Recipe, seen_anchors: set[str], seen_keys: set[str], count: int,
                prompts: dict[str, str]) -> head_training.TextGroups:
    """``count`` more held-out texts of the recipe's distribution: rows of the same shuffled mix beyond its
    ``max_samples``, in order, whose query is none of the recipe's (held out by query, as its split is), with every
    text (query, positive, negatives) that neither the training nor the held-out table holds already."""
    sources, _ = check_before_loading(recipe)
    mix, _ = load_training_data(sources, seed=recipe.training.seed, pad_negatives=recipe.data.mine_hard_negatives > 0)
    start = recipe.data.max_samples
    if start is None or start >= len(mix):
        raise SystemExit(f"--heldout-texts: the recipe draws every row of its mix ({len(mix)}); there is nothing "
                         "unseen to add. Lower max_samples in the recipe, or ask for fewer held-out texts.")
    groups: dict[str | None, dict[str, None]] = {}
    added = 0
    for row in mix.select(range(start, len(mix))):
        if row["anchor"] in seen_anchors:
            continue
        for column, text in row.items():
            prompt = head_training.heldout_prompt(column, prompts)
            key = prompts.get(prompt or "", "") + text if text is not None else None
            if key is None or key in seen_keys:
                continue
            seen_keys.add(key)
            groups.setdefault(prompt, {})[text] = None
            added += 1
        if added >= count:
            break
    if added < count:
        print(f"--heldout-texts: only {added} unseen texts in the rest of the mix (asked {count})", flush=True)
    return head_training.TextGroups(train={}, heldout={name: list(texts) for name, texts in groups.items()})


def whiten(args: argparse.Namespace) -> None:
    base, train, _, _ = cached_table(args.recipe, args.base, args.encode_precision)
    axes = principal_axes(train)  # one eigendecomposition for every γ
    for gamma in args.gammas:
        folder = Path(args.out) / (f"gamma-{gamma:g}" + (f"-{args.output_dim}d" if args.output_dim else ""))
        if (folder / "modules.json").is_file():
            print(f"{folder} exists: kept")
            continue
        weight, bias = tempered_whitening(axes, gamma, args.output_dim)
        head = Dense(weight.shape[1], weight.shape[0], bias=True, activation_function=nn.Identity(),
                     init_weight=weight, init_bias=bias)
        model = SentenceTransformer(modules=[*base, head], prompts=dict(base.prompts),
                                    default_prompt_name=base.default_prompt_name, similarity_fn_name="euclidean",
                                    device="cpu")
        model.max_seq_length = base.max_seq_length
        model.save(str(folder))
        print(f"gamma {gamma:g}: fitted on {len(train)} training embeddings -> {folder}")


def apply_head(head: list[nn.Module], embeddings: np.ndarray) -> np.ndarray:
    features = {"sentence_embedding": torch.from_numpy(embeddings).float()}
    with torch.no_grad():
        for module in head:
            features = module(features)
    return features["sentence_embedding"].numpy().astype(np.float64)


def system_heads(specs: list[str], base: SentenceTransformer, base_path: str) -> Iterator[tuple[str, list[nn.Module]]]:
    """Each ``NAME=PATH`` system's modules on top of the frozen base, one model in memory at a time; a model that
    is not a head on it is an error."""
    for spec in specs:
        name, _, path = spec.partition("=")
        head = head_of(SentenceTransformer(str(Path(path).expanduser()), device="cpu"), base)
        if head is None:
            raise SystemExit(f"{name}: {path} is not a head on the frozen base {base_path}.")
        yield name, head


def ndcg_by_system(reports: list[Path]) -> dict[tuple[str, str], float]:
    scores = {}
    for folder in reports:
        with (folder / "rag_performance_comparison.csv").open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                scores[(row["model"], row["dataset"])] = float(row["ndcg@10"])
    return scores


def frontier(args: argparse.Namespace) -> None:
    base, _, heldout, _ = cached_table(args.recipe, args.base, args.encode_precision, args.heldout_texts)
    scores = ndcg_by_system([Path(folder) for folder in args.reports])
    datasets = sorted({dataset for _, dataset in scores})
    rows = []
    for name, head in system_heads(args.system, base, args.base):
        report = isotropy_report(apply_head(head, heldout), sigreg_slices=1024)
        rows.append({"system": name, **{f"ndcg@10 {d}": scores.get((name, d), float("nan")) for d in datasets},
                     "n_heldout": report["n_samples"], **{figure: report[figure] for figure in FIGURES}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with (out / "frontier.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    if datasets:  # without reports: the held-out figures alone
        plot(rows, datasets, out / "frontier.png")
    (out / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


ROLE_FIGURES = ("mean_norm_excess", "variance_min", "variance_max", "cov_floor_ratio", "is_isotropic", "is_gaussian")


def by_role(heldout: np.ndarray, keys: list[str], query_prefix: str) -> dict[str, float]:
    """The held-out queries and documents apart: each role's isotropy, and where the mean of each mix lies.

    When the two roles' clouds have different means no single N(0, I) holds both: each role sits off the origin, and
    where a sample of both lies depends on its mix. SIGReg on the union sees training batches of one query to two
    documents (a query, its positive, its negative); the held-out sample has about one query per document.
    """
    if not query_prefix:
        raise ValueError("The base has no query prompt, so its held-out queries and documents cannot be told apart.")
    is_query = np.array([key.startswith(query_prefix) for key in keys])
    if is_query.all() or not is_query.any():
        raise ValueError(f"The held-out sample needs both roles; it has {int(is_query.sum())} queries of {len(keys)}.")
    queries, documents = heldout[is_query], heldout[~is_query]
    query_mean, document_mean = queries.mean(axis=0), documents.mean(axis=0)
    row: dict[str, float] = {
        "n_queries": int(is_query.sum()), "n_documents": int((~is_query).sum()),
        "mean_gap": float(np.linalg.norm(query_mean - document_mean)),
        "mean_norm_heldout": float(np.linalg.norm(heldout.mean(axis=0))),
        "mean_norm_1q_2d": float(np.linalg.norm((query_mean + 2 * document_mean) / 3)),
    }
    for role, cloud in (("queries", queries), ("documents", documents)):
        report = isotropy_report(cloud, sigreg_slices=1024)
        row.update({f"{role} {figure}": report[figure] for figure in ROLE_FIGURES})
    return row


def roles(args: argparse.Namespace) -> None:
    base, _, heldout, keys = cached_table(args.recipe, args.base, args.encode_precision, args.heldout_texts)
    rows = []
    for name, head in system_heads(args.system, base, args.base):
        rows.append({"system": name, **by_role(apply_head(head, heldout), keys, base.prompts.get("query", ""))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "roles.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(" | ".join(rows[0]))
    for row in rows:
        print(" | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))


def plot(rows: list[dict], datasets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        posthoc = [r for r in rows if r["system"].startswith("gamma-")]
        trained = [r for r in rows if not r["system"].startswith("gamma-")]
        widths = sorted({r["system"].removeprefix("gamma-").partition("-")[2] for r in posthoc})
        for width, style in zip(widths, ("o--", "o:", "o-.")):
            curve = [r for r in posthoc if r["system"].removeprefix("gamma-").partition("-")[2] == width]
            axis.plot([r["cov_floor_ratio"] for r in curve], [r[f"ndcg@10 {dataset}"] for r in curve], style,
                      color="grey", label=f"base + tempered whitening{' ' + width if width else ''} (post hoc)")
        for r in posthoc + trained:
            axis.annotate(r["system"], (r["cov_floor_ratio"], r[f"ndcg@10 {dataset}"]), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axis.plot([r["cov_floor_ratio"] for r in trained], [r[f"ndcg@10 {dataset}"] for r in trained], "s",
                  color="tab:blue", label="trained heads")
        axis.set_xscale("log")
        axis.set_xlabel("‖Cov − I‖_F / floor on the held-out training sample (1 = N(0, I))")
        axis.set_ylabel(f"nDCG@10 {dataset}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("whiten", "frontier", "roles"):
        command = commands.add_parser(name)
        command.add_argument("--recipe", required=True, help="the head-only recipe the heads were trained with")
        command.add_argument("--base", required=True, help="its frozen base (local folder)")
        command.add_argument("--out", required=True)
        command.add_argument("--encode-precision", choices=PRECISION_CHOICES, default=None,
                             help="the precision the heads' run encoded in (default: the recipe's encode_precision)")
    commands.choices["whiten"].add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    commands.choices["whiten"].add_argument("--output-dim", type=int, default=None,
                                            help="keep only the top principal axes (default: full width)")
    for name in ("frontier", "roles"):
        commands.choices[name].add_argument("--heldout-texts", type=int, default=0, metavar="N",
                                            help="top the recipe's held-out sample up to N texts with rows of its mix "
                                                 "it never drew (encoded now, cached); default: its sample as is")
        commands.choices[name].add_argument("--system", action="append", required=True, metavar="NAME=PATH",
                                            help="the name evaluate.py reported it under, and its model folder")
    commands.choices["frontier"].add_argument("--reports", nargs="*", default=[],
                                              help="evaluate.py output folders (rag_performance_comparison.csv); "
                                                   "none: the held-out isotropy and Gaussian figures alone")
    args = parser.parse_args()
    {"whiten": whiten, "frontier": frontier, "roles": roles}[args.command](args)


if __name__ == "__main__":
    main()
