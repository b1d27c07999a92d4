"""Can a ragcun model be served through sentence-transformers' ONNX / OpenVINO backends on this CPU?

For each backend (and its int8 variant) the script loads the model with
``SentenceTransformer(path, backend=...)`` — which exports it on the fly — and compares it side by side
with the torch model on the same texts: largest absolute embedding difference, lowest cosine between the
two embeddings of a text, and encoding speed (texts/s, interleaved repeats). A backend that cannot be
loaded is reported with the reason. ``torch-bf16`` is the same torch model with its transformer under
bfloat16 autocast (``evaluate.py --precision bfloat16``), measured the same way. With ``--beir`` and ``--ndcg`` the nDCG@10 change on that BEIR folder
is measured too (only for backends whose embeddings agree; it encodes the whole corpus twice).

    python benchmarks/export_backends.py --model PATH [--beir ../shared/data/scifact] [--texts 64] [--ndcg]

A release ships an export only when it is within 0.5 nDCG points of fp32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

SAMPLE_TEXTS = [
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Insulin is a hormone that lowers the level of glucose in the blood.",
    "The Tour de France is a multi-stage bicycle race held mainly in France each July.",
    "A violin has four strings tuned in perfect fifths.",
]
BACKENDS = ["onnx", "onnx-int8", "openvino", "openvino-int8", "torch-bf16"]
AGREEMENT_MIN_COSINE = 0.999  # below this the export computes a different function, whatever its speed


def corpus_texts(beir: Path | None, count: int, max_chars: int = 1200) -> list[str]:
    if beir is None:
        return (SAMPLE_TEXTS * (count // len(SAMPLE_TEXTS) + 1))[:count]
    texts = []
    with (beir / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip()[:max_chars])
            if len(texts) == count:
                break
    return texts


def load_backend(model_path: str, variant: str, workdir: Path) -> SentenceTransformer:
    """``onnx`` / ``openvino`` as sentence-transformers exports them; ``*-int8`` with its quantization helpers."""
    if variant == "onnx":
        return SentenceTransformer(model_path, backend="onnx", device="cpu")
    if variant == "onnx-int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        model = SentenceTransformer(model_path, backend="onnx", device="cpu")
        model.save(str(workdir / "onnx"))
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(workdir / "onnx"))
        return SentenceTransformer(str(workdir / "onnx"), backend="onnx", device="cpu",
                                   model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"})
    if variant == "openvino":
        return SentenceTransformer(model_path, backend="openvino", device="cpu",
                                   model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})
    if variant == "openvino-int8":  # weight-only int8 compression at export
        return SentenceTransformer(model_path, backend="openvino", device="cpu",
                                   model_kwargs={"load_in_8bit": True, "ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})
    if variant == "torch-bf16":
        from ragcun.encoding.precision import set_encoding_precision

        return set_encoding_precision(SentenceTransformer(model_path, device="cpu"), "bfloat16")
    raise ValueError(f"Unknown backend variant {variant!r}")


def texts_per_second(model: SentenceTransformer, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    model.encode_document(texts, batch_size=batch_size, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


def ndcg_at_10(model: SentenceTransformer, beir: Path, max_seq_length: int) -> float:
    from ragcun.evaluation.beir import load_beir
    from ragcun.evaluation.metrics import rank, retrieval_metrics

    model.max_seq_length = max_seq_length
    split = load_beir(beir)
    queries = model.encode_query(split.query_texts, batch_size=32, show_progress_bar=True)
    documents = model.encode_document(split.corpus_texts, batch_size=32, show_progress_bar=True)
    ranking = rank(queries, documents, model.similarity_fn_name)
    return retrieval_metrics(ranking, split)["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--beir", type=Path, help="BEIR folder: texts for the comparison, and nDCG with --ndcg")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--ndcg", action="store_true")
    args = parser.parse_args()

    import sentence_transformers
    import torch
    import transformers

    print(f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    reference = SentenceTransformer(args.model, device="cpu")
    reference.max_seq_length = args.max_seq_length
    texts = corpus_texts(args.beir, args.texts)
    expected = reference.encode_document(texts, batch_size=args.batch_size, show_progress_bar=False)
    baseline_ndcg = ndcg_at_10(reference, args.beir, args.max_seq_length) if args.ndcg and args.beir else None

    print(f"{'backend':<15} {'max |diff|':>10} {'min cos':>8} {'torch t/s':>9} {'backend t/s':>11} {'ratio':>6}  result")
    for variant in args.backend or BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                model = load_backend(args.model, variant, Path(tmp))
            except Exception as error:  # report every failure, then go on with the next backend
                reason = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]
                print(f"{variant:<15} {'–':>10} {'–':>8} {'–':>9} {'–':>11} {'–':>6}  unavailable: {reason[:160]}")
                continue
            model.max_seq_length = args.max_seq_length
            got = model.encode_document(texts, batch_size=args.batch_size, show_progress_bar=False)
            diff = float(np.abs(got - expected).max())
            cosine = float(np.min(np.sum(got * expected, 1) /
                                  (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))))
            torch_speed, backend_speed = [], []
            for _ in range(args.repeats):
                torch_speed.append(texts_per_second(reference, texts, args.batch_size))
                backend_speed.append(texts_per_second(model, texts, args.batch_size))
            t, b = float(np.median(torch_speed)), float(np.median(backend_speed))
            if cosine < AGREEMENT_MIN_COSINE:
                result = f"not shipped: embeddings disagree with torch (min cosine {cosine:.4f})"
            elif baseline_ndcg is not None:
                change = 100 * (ndcg_at_10(model, args.beir, args.max_seq_length) - baseline_ndcg)
                result = (f"nDCG@10 change {change:+.2f} points (fp32 {baseline_ndcg:.4f}): "
                          f"{'ship' if abs(change) <= 0.5 else 'not shipped'}")
            else:
                result = "agrees; nDCG not measured (pass --beir and --ndcg)"
            print(f"{variant:<15} {diff:>10.2e} {cosine:>8.4f} {t:>9.1f} {b:>11.1f} {b / t:>6.2f}  {result}")


if __name__ == "__main__":
    main()
