"""Offline demo of the ragcun model stack: build, check isotropy, save, reload with plain sentence-transformers.

Builds a tiny EmbeddingGemma-shaped base from a config (no download), turns it into a ragcun model
with a whitening-initialised 768→512-style projection (here 64→32), and prints the isotropy report
of its embeddings before and after the projection. Untrained: this shows the stack and the
measurements, not retrieval quality.

    python examples/stack_demo.py
"""

from __future__ import annotations

import os
import random
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers import SentenceTransformer  # noqa: E402

from ragcun import build_model, isotropy_report  # noqa: E402
from ragcun.tiny_model import build_tiny_gemma  # noqa: E402

SUBJECTS = ["the telescope", "a violin", "fresh bread", "the vaccine", "a glacier", "the river", "solar panels", "the court"]
VERBS = ["changes", "explains", "depends on", "protects", "measures", "shapes", "replaces", "reveals"]
OBJECTS = ["the night sky", "every melody", "the morning market", "the immune system", "the valley", "local farms", "city power", "state law"]


def sentences() -> list[str]:
    texts = [f"{s} {v} {o}" for s in SUBJECTS for v in VERBS for o in OBJECTS]
    random.Random(0).shuffle(texts)  # so the fitting half and the held-out half share a distribution
    return texts


def main() -> None:
    texts = sentences()
    with tempfile.TemporaryDirectory() as workdir:
        base_dir = build_tiny_gemma(os.path.join(workdir, "base"), texts, hidden_size=64, num_layers=2)
        base = SentenceTransformer(str(base_dir), device="cpu")
        model = build_model(base, output_dim=32, init="whiten", init_texts={"document": texts[::2]}, freeze_layers=0)
        held_out = texts[1::2]
        before = base.encode_document(held_out)
        after = model.encode_document(held_out)
        keys = ["mean_norm", "variance_mean", "cov_identity_fro", "cov_identity_fro_floor", "mean_abs_offdiag_corr", "is_isotropic"]
        print(f"{'figure':<26}{'base (normalized)':>20}{'ragcun (whitened)':>20}")
        for name, base_value, ragcun_value in zip(keys, *(map(isotropy_report(x).get, keys) for x in (before, after))):
            print(f"{name:<26}{base_value!s:>20.8}{ragcun_value!s:>20.8}")
        save_dir = os.path.join(workdir, "ragcun-tiny")
        model.save(save_dir)
        reloaded = SentenceTransformer(save_dir, device="cpu")
        print(f"reloaded with plain SentenceTransformer: similarity={reloaded.similarity_fn_name}, "
              f"dim={reloaded.get_embedding_dimension()}, prompts={sorted(reloaded.prompts)}")
        distances = -reloaded.similarity(reloaded.encode_query(["what shapes the valley?"]), reloaded.encode_document(held_out[:3]))
        print("L2 distances of one query to three documents:", [round(float(d), 2) for d in distances[0]])


if __name__ == "__main__":
    main()
