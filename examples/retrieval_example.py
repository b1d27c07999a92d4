"""Retrieval with a ragcun model: add three documents, retrieve by L2 distance, print distances and p-values.

Runs offline. By default it uses the quickstart model (output/quickstart/final: all-MiniLM-L6-v2 with a
Gaussian head trained on the project's broad triplet set), training it first with
`python train.py --config recipes/quickstart.yaml` (under a minute on a CPU) when it is not there yet.

    python examples/retrieval_example.py [--model PATH_OR_HUB_ID]

Each hit's p-value is the chance that an unrelated document would be at least this close to the query
(χ²_D null of ‖q − d‖²/2 for N(0, I) embeddings): small means "closer than chance".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ragcun.retrieval.retriever import GaussianRetriever  # noqa: E402

QUICKSTART_MODEL = ROOT / "output" / "quickstart" / "final"
DOCUMENTS = [
    "Machine learning is a field of computer science in which algorithms learn patterns from data.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Bread rises because yeast ferments sugars and releases carbon dioxide.",
]


def quickstart_model() -> Path:
    if not (QUICKSTART_MODEL / "modules.json").is_file():
        print("Training the quickstart model first (python train.py --config recipes/quickstart.yaml) ...", flush=True)
        subprocess.run([sys.executable, "train.py", "--config", "recipes/quickstart.yaml"], cwd=ROOT, check=True)
    return QUICKSTART_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a ragcun model folder or Hub id (default: the quickstart model)")
    parser.add_argument("--query", default="What is machine learning?")
    args = parser.parse_args()

    # Three documents are too few to fit the corpus's own p-value null: judge them against N(0, I), the
    # distribution the quickstart head was trained towards.
    retriever = GaussianRetriever(args.model or str(quickstart_model()), calibration="global")
    retriever.add_documents(DOCUMENTS, ids=["ml", "eiffel", "bread"])

    print(f"Query: {args.query}")
    for hit in retriever.search(args.query, top_k=3):
        print(f"[dist={hit.distance:.3f}] [p={hit.pvalue:.3g}] {hit.document}")

    # The seed's form still works: (document, distance) pairs.
    document, distance = retriever.retrieve(args.query, top_k=1)[0]
    print(f"\nretrieve() -> ({document[:40]!r}..., {distance:.3f})")
    print(f"hits closer than chance at the 1% level: {len(retriever.search(args.query, top_k=3, max_pvalue=0.01))}")

    with tempfile.TemporaryDirectory() as folder:
        retriever.save(Path(folder) / "index")
        reloaded = GaussianRetriever.load(Path(folder) / "index")  # finds the model from the manifest
        assert reloaded.retrieve(args.query, top_k=3) == retriever.retrieve(args.query, top_k=3)
        print(f"saved and reloaded {len(reloaded)} documents: same results")


if __name__ == "__main__":
    main()
