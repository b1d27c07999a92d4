"""Releasing a model: the card (metadata, ragcun's sections, results or their absence), the upload through a
stand-in Hub client, loading by id from a Hugging Face cache with no ragcun, and bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer

import evaluate
from ragcun import build_model
from ragcun.release.hub import build_release, main
from ragcun.release.model_card import CardOptions
from tests.helpers import tiny_texts
from tests.helpers import write_topic_beir as write_beir

REPO_ID = "org/ragcun-tiny"
RECIPE = {
    "base_model": "google/embeddinggemma-300m", "output_dim": 16, "init": "whiten", "freeze_layers": 0,
    "lambda_contrastive": 1.0, "lambda_isotropy": 0.01, "num_slices": 1024, "max_seq_length": 64,
    "train_data": ["sentence-transformers/msmarco-bm25", {"path": "../data/scifact", "split": "train"}],
    "per_device_train_batch_size": 16, "learning_rate": 1e-5, "seed": 42,
}
SUMMARY = {"global_step": 228, "num_train_rows": 3648, "world_size": 1, "train_runtime_s": 3600.0}


@pytest.fixture(scope="module")
def run_dir(tiny_base_dir, tmp_path_factory) -> Path:
    """What train.py leaves behind: output_dir/final plus recipe.yaml and training_summary.json."""
    queries, passages = tiny_texts()
    model = build_model(str(tiny_base_dir), output_dim=16, init="whiten",
                        init_texts={"query": queries, "document": passages}, freeze_layers=0)
    run = tmp_path_factory.mktemp("run")
    model.save(str(run / "final"))
    (run / "recipe.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    (run / "training_summary.json").write_text(json.dumps(SUMMARY))
    return run


@pytest.fixture(scope="module")
def eval_dir(run_dir, tiny_base_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval")
    data = write_beir(folder / "tinybeir")
    evaluate.main(["--model", str(run_dir / "final"), "--baseline", str(tiny_base_dir), "--name", "ragcun-tiny",
                   "--name", "base", "--data", str(data), "--mteb-local", "--output-dir", str(folder / "reports"),
                   "--cache-dir", str(folder / "cache")])
    return folder / "reports"


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


class RecordingHub:
    """Stands in for huggingface_hub.HfApi: records every call and what the uploaded folder held."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def create_branch(self, **kwargs):
        self.calls.append(("create_branch", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        return "commit-url"


def test_release_card_has_metadata_sections_and_measured_results(run_dir, eval_dir, tmp_path: Path) -> None:
    before = folder_digest(run_dir)
    release = build_release(run_dir / "final", CardOptions(repo_id=REPO_ID, license="gemma", language=["en"],
                                                          eval_dir=eval_dir), tmp_path / "release")
    assert folder_digest(run_dir) == before  # the user's folder is untouched

    files = {str(p.relative_to(release.folder)) for p in release.folder.rglob("*") if p.is_file()}
    assert {"modules.json", "model.safetensors", "README.md", "recipe.yaml", "training_summary.json",
            "evaluation/report.md", "evaluation/isotropy_comparison.png",
            "evaluation/rag_performance_comparison.csv"} <= files
    assert not any(name.startswith("evaluation/cache") or name.endswith(".npy") for name in files)

    card = ModelCard.load(release.folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag) == ("sentence-transformers", "sentence-similarity")
    assert data.base_model == "google/embeddinggemma-300m" and data.license == "gemma"
    assert data.datasets == ["sentence-transformers/msmarco-bm25"]  # local files have no Hub id
    assert {"ragcun", "isotropic-gaussian", "sentence-transformers"} <= set(data.tags)

    rows = list(csv.DictReader((eval_dir / "rag_performance_comparison.csv").open()))
    ours = next(r for r in rows if r["model"] == "ragcun-tiny")
    index = {(r.task_type, r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert index[("retrieval", "tinybeir", "ndcg_at_10")] == pytest.approx(float(ours["ndcg@10"]))
    assert index[("retrieval", "tinybeir", "mrr_at_10")] == pytest.approx(float(ours["mrr@10"]))
    assert ("mteb", "LocalBEIR-tinybeir", "main_score") in index
    # only the released model's rows: the baselines of the report stay in the tables, not in model-index
    assert [r.metric_type for r in data.eval_results if r.task_type == "retrieval"].count("ndcg_at_10") == 1

    text = card.text
    assert text.startswith("\n# ragcun-tiny") or text.lstrip().startswith("# ragcun-tiny")
    for section in ("## What this model is", "### Retrieval with ragcun's GaussianRetriever", "**The p-value threshold.**",
                    "## Results", "## Training", "## Limitations", "## Model Details"):
        assert section in text, section
    assert text.index("## What this model is") < text.index("## Model Details")  # ours first, then ST's
    assert f'SentenceTransformer("{REPO_ID}")' in text and "encode_query" in text and "encode_document" in text
    assert "sentence_transformers_model_id" not in text
    assert "negative** L2 distances" in text and "non-central χ² with\n16 degrees of freedom" in text and "‖q − d‖²/2 ~ χ²_16" in text
    assert f"| **ragcun-tiny** | tinybeir | euclidean | {float(ours['ndcg@10']):.4f}" in text
    assert "| lambda_isotropy | `0.01` |" in text and "| optimizer steps | 228 |" in text
    assert "msmarco-bm25, scifact (train)" in text
    for key in ("balestriero2025lejepa", "oord2019representationlearningcontrastivepredictive", "embedding_gemma_2025", "bajaj2016msmarco"):
        assert text.count(key) == 1, key
    assert "results are missing" not in text


def test_card_retriever_snippet_runs(run_dir, tmp_path: Path, capsys) -> None:
    """The GaussianRetriever example of the card runs as written (on the local folder instead of the Hub id)."""
    release = build_release(run_dir, CardOptions(repo_id=REPO_ID), tmp_path / "release")
    text = (release.folder / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
                   if "GaussianRetriever" in block)
    namespace: dict = {}
    exec(snippet.replace(f'"{REPO_ID}"', repr(str(release.folder))), namespace)  # noqa: S102 - our own card's code
    retriever = namespace["retriever"]
    assert len(retriever) == 2  # it ran to the end: both documents were indexed and searched
    printed = capsys.readouterr().out.splitlines()
    # hits farther than the 1% threshold are filtered out, so a toy model may print fewer than two: what it prints
    # must be exactly the hits the same search returns
    expected = [f"{hit.id} {round(hit.distance, 2)} {hit.pvalue}"
                for hit in retriever.search("Which planet is red?", top_k=2, max_pvalue=0.01)]
    assert printed == expected
    assert {hit.id for hit in retriever.search("Which planet is red?", top_k=2)} == {"mars", "venus"}


def test_card_without_results_says_so(run_dir, tmp_path: Path) -> None:
    release = build_release(run_dir, CardOptions(repo_id=REPO_ID), tmp_path / "release")  # output_dir also works
    card = ModelCard.load(release.folder / "README.md")
    assert "**Evaluation results are missing.**" in card.text
    assert "nDCG@10" not in card.text and "| **" not in card.text
    assert not [r for r in (card.data.eval_results or []) if r.task_type == "retrieval"]
    assert not (release.folder / "evaluation").exists()


def test_push_uploads_the_release_through_the_hub_client(run_dir, eval_dir, capsys) -> None:
    hub = RecordingHub()
    code = main(["push", str(run_dir / "final"), REPO_ID, "--eval-dir", str(eval_dir), "--private",
                 "--revision", "v1", "--license", "gemma"], api=hub)
    assert code == 0, capsys.readouterr().err
    assert [name for name, _ in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1] == {"repo_id": REPO_ID, "repo_type": "model", "private": True, "exist_ok": True}
    assert hub.calls[1][1]["branch"] == "v1"
    upload = hub.calls[2][1]
    assert (upload["repo_id"], upload["revision"], upload["create_pr"]) == (REPO_ID, "v1", False)
    assert not Path(upload["folder_path"]).exists()  # the temporary release folder is cleaned up
    assert {"modules.json", "model.safetensors", "README.md", "recipe.yaml", "evaluation/report.md"} <= set(hub.uploaded)
    assert b"## What this model is" in hub.uploaded["README.md"]
    assert hub.uploaded["model.safetensors"] == (run_dir / "final" / "model.safetensors").read_bytes()

    pr_hub = RecordingHub()
    assert main(["push", str(run_dir), REPO_ID, "--create-pr"], api=pr_hub) == 0
    assert [name for name, _ in pr_hub.calls] == ["create_repo", "upload_folder"]
    assert pr_hub.calls[1][1]["create_pr"] is True and pr_hub.calls[0][1]["private"] is False


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_a_model", "is not a sentence-transformers model folder .*modules.json"),
        ("missing_folder", "does not exist"),
        ("no_owner", "give the owner too, as 'org/name'"),
        ("bad_characters", "Invalid repository id 'org/bad name'"),
        ("too_deep", "Invalid repository id 'a/b/c'"),
        ("not_a_report", "is not an evaluate.py report folder"),
        ("unknown_eval_name", "No rows for model 'nobody'.*ragcun-tiny"),
    ],
)
def test_bad_input_is_refused_before_any_upload(run_dir, eval_dir, tmp_path: Path, case: str, message: str, capsys) -> None:
    model, repo, extra = str(run_dir / "final"), REPO_ID, []
    if case == "not_a_model":
        (tmp_path / "stuff").mkdir()
        (tmp_path / "stuff" / "weights.bin").write_bytes(b"\0")
        model = str(tmp_path / "stuff")
    elif case == "missing_folder":
        model = str(tmp_path / "nowhere")
    elif case == "no_owner":
        repo = "ragcun-tiny"
    elif case == "bad_characters":
        repo = "org/bad name"
    elif case == "too_deep":
        repo = "a/b/c"
    elif case == "not_a_report":
        extra = ["--eval-dir", str(tmp_path)]
    elif case == "unknown_eval_name":
        extra = ["--eval-dir", str(eval_dir), "--eval-name", "nobody"]
    hub = RecordingHub()
    assert main(["push", model, repo, *extra], api=hub) == 2
    assert hub.calls == []
    assert re.search(message, capsys.readouterr().err)


def test_release_refuses_a_non_empty_output_folder(run_dir, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        build_release(run_dir, CardOptions(repo_id=REPO_ID), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def place_in_hf_cache(release: Path, cache: Path, repo_id: str, revision: str = "a" * 40) -> None:
    """The layout huggingface_hub leaves after a download: models--org--name/{refs/main, snapshots/<rev>/}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(release, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def run_offline(script: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.mark.slow
def test_released_model_loads_by_id_without_ragcun(run_dir, eval_dir, tmp_path: Path) -> None:
    release = build_release(run_dir, CardOptions(repo_id=REPO_ID, eval_dir=eval_dir), tmp_path / "release")
    cache = tmp_path / "hf" / "hub"
    place_in_hf_cache(release.folder, cache, REPO_ID)
    texts = ["planets orbit the sun", "boil pasta in salted water"]
    ours = SentenceTransformer(str(run_dir / "final"), device="cpu")
    result = run_offline(f"""
        import json, sys
        sys.modules["ragcun"] = None  # a user without ragcun
        import numpy as np
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({REPO_ID!r}, device="cpu")
        np.save("query.npy", model.encode_query({texts!r}))
        np.save("document.npy", model.encode_document({texts!r}))
        print(json.dumps({{"similarity": model.similarity_fn_name, "prompts": model.prompts}}))
        """, cache, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["similarity"] == "euclidean"
    assert info["prompts"]["query"] == ours.prompts["query"] and info["prompts"]["document"] == ours.prompts["document"]
    assert np.array_equal(np.load(tmp_path / "query.npy"), ours.encode_query(texts))
    assert np.array_equal(np.load(tmp_path / "document.npy"), ours.encode_document(texts))

    # mteb.evaluate on the model loaded by its id (ragcun only builds the local task)
    beir = write_beir(tmp_path / "tinybeir")
    result = run_offline(f"""
        import json, mteb
        from ragcun.evaluation.mteb import beir_retrieval_task
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({REPO_ID!r}, device="cpu")
        assert type(model).__module__.startswith("sentence_transformers")
        task = beir_retrieval_task({str(beir)!r})
        results = mteb.evaluate(model, tasks=[task], cache=None, show_progress_bar=False)
        print(json.dumps({{"ndcg": results[0].scores["test"][0]["ndcg_at_10"]}}))
        """, cache, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ndcg = json.loads(result.stdout.strip().splitlines()[-1])["ndcg"]
    rows = list(csv.DictReader((eval_dir / "rag_performance_comparison.csv").open()))
    assert ndcg == pytest.approx(float(next(r for r in rows if r["model"] == "ragcun-tiny")["ndcg@10"]), abs=1e-5)
