"""ragcun.evaluation.mteb: local BEIR / STS folders as MTEB tasks, the euclidean fix, and the results layout (offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mteb
import numpy as np
import pytest
import pytrec_eval
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

import ragcun
from ragcun.evaluation.mteb import (
    RagcunEncoderWrapper,
    beir_retrieval_task,
    mteb_model,
    result_path,
    run_mteb,
    sts_task,
)
from ragcun.identity import weights_revision
from tests import helpers
from tests.helpers import TOPICS

# A tiny BEIR folder: one document per fact (every other one with a title), one query per topic fact.
DOCS = {
    f"{topic[:3]}{i}": {"title": topic if i % 2 else "", "text": fact}
    for topic, facts in TOPICS.items()
    for i, fact in enumerate(facts)
}
QUERIES = {
    f"q-{topic[:3]}{i}": f"what about {topic} fact {i} variant 0"
    for topic, facts in TOPICS.items()
    for i in range(len(facts))
}
# Graded judgements; a query with two relevant documents, and one judged document of grade 0.
QRELS = [
    ("q-ast0", "ast0", 2), ("q-ast0", "ast1", 1), ("q-coo1", "coo1", 1), ("q-coo1", "mus2", 0),
    ("q-med2", "med2", 1), ("q-mus0", "mus0", 2), ("q-mus1", "mus1", 1), ("q-ast2", "ast2", 1),
]  # fmt: skip

# STS Benchmark rows as in the real file: tab separated, not quoted ('"' belongs to the sentence), trailing spaces,
# and rows with two extra source columns.
STS_ROWS = [
    ("main-captions", "MSRvid", "2012test", "0001", "5.000", "planets orbit the sun", "planets orbit the sun in astronomy"),
    ("main-captions", "MSRvid", "2012test", "0002", "0.200", "bread needs yeast to rise", "a violin has four strings"),
    ("main-news", "headlines", "2013", "0003", "3.800", 'a comet has an "icy" tail', "a comet has an icy tail note 1 "),
    ("main-news", "headlines", "2013", "0004", "1.000", "vaccines train the immune system", "jazz uses improvisation"),
    ("main-forums", "answer-answer", "2016", "0005", "4.400", "insulin controls blood sugar", "insulin controls blood sugar note 2", "src a", "src b"),
    ("main-forums", "answer-answer", "2016", "0006", "2.500", "boil pasta in salted water", "sear the steak in a hot pan", "src c", "src d"),
    ("main-captions", "images", "2015", "0007", "0.000", "the moon reflects sunlight", "antibiotics kill bacteria"),
    ("main-captions", "images", "2015", "0008", "4.800", "the piano has eighty eight keys", "the piano has eighty eight keys in music"),
]  # fmt: skip


def write_beir(folder: Path, qrels=QRELS, corpus=DOCS) -> Path:
    return helpers.write_beir(folder, corpus, QUERIES, qrels)


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_beir(tmp_path_factory.mktemp("tinybeir"))


@pytest.fixture(scope="module")
def sts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinysts")
    (folder / "sts-test.csv").write_text("".join("\t".join(row) + "\n" for row in STS_ROWS), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def euclid_model(tiny_base_dir: Path) -> SentenceTransformer:
    model = ragcun.build_model(str(tiny_base_dir), output_dim=16, init="random", freeze_layers=0)
    model.eval()
    assert model.similarity_fn_name == "euclidean"
    return model


@pytest.fixture(scope="module")
def cosine_model(tiny_base_dir: Path) -> SentenceTransformer:
    model = SentenceTransformer(str(tiny_base_dir), device="cpu")
    model.eval()
    assert model.similarity_fn_name == "cosine"
    return model


@pytest.fixture(params=["euclid_model", "cosine_model"])
def model(request: pytest.FixtureRequest) -> SentenceTransformer:
    return request.getfixturevalue(request.param)


def independent_ndcg10(model: SentenceTransformer) -> float:
    """nDCG@10 by pytrec_eval of an exhaustive ranking by model.similarity, texts joined as BEIR does."""
    judged = sorted({q for q, _, _ in QRELS})
    doc_ids = list(DOCS)
    doc_texts = [f"{d['title']} {d['text']}".strip() if d["title"] else d["text"] for d in DOCS.values()]
    queries = model.encode_query([QUERIES[q] for q in judged], convert_to_tensor=True)
    documents = model.encode_document(doc_texts, convert_to_tensor=True)
    scores = model.similarity(queries, documents).numpy()
    run = {q: {d: float(s) for d, s in zip(doc_ids, row)} for q, row in zip(judged, scores)}
    qrels: dict[str, dict[str, int]] = {}
    for q, d, grade in QRELS:
        qrels.setdefault(q, {})[d] = grade
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([values["ndcg_cut_10"] for values in per_query.values()]))


def test_local_retrieval_task_matches_pytrec_eval(model: SentenceTransformer, beir_dir: Path, tmp_path: Path) -> None:
    task = beir_retrieval_task(beir_dir)
    assert task.metadata.name == f"LocalBEIR-{beir_dir.name}" and task.metadata.main_score == "ndcg_at_10"
    scores = run_mteb(model, [task], tmp_path / "out", "ragcun/tiny", revision="r1")
    expected = independent_ndcg10(model)
    assert 0.0 < expected < 1.0
    # mteb rounds retrieval metrics to 5 decimals.
    assert scores[task.metadata.name] == pytest.approx(round(expected, 5), abs=1e-6)


def test_sts_task_uses_the_models_own_similarity(model: SentenceTransformer, sts_dir: Path, tmp_path: Path) -> None:
    task = sts_task(sts_dir)
    scores = run_mteb(model, [task], tmp_path / "out", "ragcun/tiny", revision="r1")
    first = model.encode([row[5] for row in STS_ROWS], convert_to_numpy=True)
    second = model.encode([row[6] for row in STS_ROWS], convert_to_numpy=True)
    gold = [float(row[4]) for row in STS_ROWS]
    if model.similarity_fn_name == "euclidean":
        similarity = -np.linalg.norm(first - second, axis=1)
    else:
        similarity = (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    assert scores[task.metadata.name] == pytest.approx(spearmanr(similarity, gold)[0], abs=1e-6)
    saved = json.loads(result_path(tmp_path / "out", "ragcun/tiny", "r1", task.metadata.name).read_text())
    entry = saved["scores"]["test"][0]
    # the main score is the model-similarity Spearman: -L2 (euclidean) or cosine, as MTEB's STSBenchmark reports.
    twin = "euclidean_spearman" if model.similarity_fn_name == "euclidean" else "cosine_spearman"
    assert entry["main_score"] == entry["spearman"] == pytest.approx(entry[twin], abs=1e-6)


def test_plain_mteb_fails_on_euclidean_sts_and_the_wrapper_fixes_it(euclid_model, sts_dir: Path) -> None:
    task = sts_task(sts_dir)
    try:  # the upstream bug this module works around (if mteb fixes it, this simply passes)
        mteb.evaluate(euclid_model, task, cache=None, show_progress_bar=False, co2_tracker=False)
    except ValueError as error:
        assert "Similarity function not specified" in str(error)
    wrapped = mteb_model(euclid_model, "ragcun/tiny-euclid", revision="r1")
    assert isinstance(wrapped, RagcunEncoderWrapper)
    a, b = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(wrapped.similarity_pairwise(a, b)), -np.linalg.norm(a - b, axis=1), rtol=1e-5)
    expected_matrix = -np.linalg.norm(a[:, None] - b[None], axis=2)
    np.testing.assert_allclose(np.asarray(wrapped.similarity(a, b)), expected_matrix, rtol=1e-5)
    result = mteb.evaluate(wrapped, task, cache=None, show_progress_bar=False, co2_tracker=False)
    assert np.isfinite(result.task_results[0].get_score())


def test_results_layout_name_revision_and_reuse(
    euclid_model, beir_dir: Path, sts_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "results"
    tasks = [beir_retrieval_task(beir_dir, name="TinyRetrieval"), sts_task(sts_dir, name="TinySTS")]
    scores = run_mteb(euclid_model, tasks, out, "ragcun/tiny-euclid", revision="step-100")
    assert set(scores) == {"TinyRetrieval", "TinySTS"}
    folder = out / "ragcun__tiny-euclid" / "step-100"
    for task in tasks:
        saved = json.loads((folder / f"{task.metadata.name}.json").read_text())
        assert saved["task_name"] == task.metadata.name
        assert saved["dataset_revision"] == task.metadata.revision
        assert saved["scores"]["test"][0]["main_score"] == pytest.approx(scores[task.metadata.name], abs=1e-6)
    meta = json.loads((folder / "model_meta.json").read_text())
    assert (meta["name"], meta["revision"]) == ("ragcun/tiny-euclid", "step-100")
    assert meta["similarity_fn_name"] == "euclidean"
    assert sorted(p.name for p in out.iterdir()) == ["ragcun__tiny-euclid"]

    # Existing results are read back, not recomputed; overwrite=True recomputes.
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded although the results exist")

    monkeypatch.setattr(euclid_model, "encode", no_encoding)
    assert run_mteb(euclid_model, tasks, out, "ragcun/tiny-euclid", revision="step-100") == scores
    with pytest.raises(AssertionError, match="encoded although"):
        run_mteb(euclid_model, tasks[1:], out, "ragcun/tiny-euclid", revision="step-100", overwrite=True)


def test_default_revision_fingerprints_the_weights(euclid_model, cosine_model) -> None:
    assert weights_revision(euclid_model) == weights_revision(euclid_model)
    assert weights_revision(euclid_model) != weights_revision(cosine_model)
    wrapped = mteb_model(euclid_model, "ragcun/tiny-euclid")
    assert wrapped.mteb_model_meta.revision == weights_revision(euclid_model)
    assert wrapped.mteb_model_meta.name == "ragcun/tiny-euclid"
    with pytest.raises(ValueError, match="organization/model_name"):
        mteb_model(euclid_model, "no-organization")


def test_unknown_task_name_lists_close_matches(euclid_model, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="Unknown MTEB task") as error:
        run_mteb(euclid_model, ["SciFactt", "stsbenchmark"], out, "ragcun/tiny")
    message = str(error.value)
    assert "'SciFactt'" in message and "SciFact" in message.split("'SciFactt'")[1]
    assert "STSBenchmark" in message.split("'stsbenchmark'")[1]
    assert not out.exists()  # nothing ran
    (task,) = ragcun.evaluation.mteb.resolve_tasks(["SciFact"])
    assert task.metadata.name == "SciFact" and task.metadata.main_score == "ndcg_at_10"


def _count_encodes(model, monkeypatch) -> list:
    calls: list = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_unwritable_output_dir_is_refused_before_running(
    euclid_model, sts_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        target = locked / "results"
        if os.access(locked, os.W_OK):  # root ignores the mode: a path under a regular file can never be a folder
            (tmp_path / "a-file").write_text("x")
            target = tmp_path / "a-file" / "results"
        calls = _count_encodes(euclid_model, monkeypatch)
        with pytest.raises(OSError, match="not a writable directory"):
            run_mteb(euclid_model, [sts_task(sts_dir)], target, "ragcun/tiny")
        assert calls == []
    finally:
        locked.chmod(0o700)


def test_output_path_under_a_file_is_refused(euclid_model, sts_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a writable directory"):
        run_mteb(euclid_model, [sts_task(sts_dir)], tmp_path / "a-file" / "results", "ragcun/tiny")
    with pytest.raises(NotADirectoryError, match="not a writable directory"):
        run_mteb(euclid_model, [sts_task(sts_dir)], tmp_path / "a-file", "ragcun/tiny")


def test_bad_beir_folders_fail_early_with_clear_errors(tmp_path: Path) -> None:
    bad_qrels = write_beir(tmp_path / "bad", qrels=[*QRELS, ("q-ast0", "no-such-doc", 1), ("no-such-query", "ast0", 1)])
    with pytest.raises(ValueError, match=r"names ids that are not in the folder.*no-such-query.*no-such-doc"):
        beir_retrieval_task(bad_qrels)
    missing = write_beir(tmp_path / "missing")
    (missing / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        beir_retrieval_task(missing)
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        beir_retrieval_task(write_beir(tmp_path / "nodev"), split="dev")
    empty = write_beir(tmp_path / "empty", qrels=[], corpus={})
    with pytest.raises(ValueError, match="no documents"):
        beir_retrieval_task(empty)


def test_sts_file_parsing_and_errors(sts_dir: Path, tmp_path: Path) -> None:
    task = sts_task(sts_dir / "sts-test.csv", name="MySTS")
    assert (task.metadata.name, task.metadata.main_score, task.metadata.type) == ("MySTS", "spearman", "STS")
    task.load_data()
    data = task.dataset["test"]
    assert data["score"] == [float(row[4]) for row in STS_ROWS]
    assert data["sentence1"][2] == 'a comet has an "icy" tail'  # quotes kept, not parsed as csv quoting
    assert data["sentence2"][4] == "insulin controls blood sugar note 2"  # extra source columns ignored
    bad = tmp_path / "sts-test.csv"
    bad.write_text("g\tf\t2012\t1\t7.5\ta\tb\ng\tf\t2012\t2\t1.0\tc\td\n")
    with pytest.raises(ValueError, match="outside the STS Benchmark range"):
        sts_task(bad)
    bad.write_text("g\tf\t2012\t1\t2.0\tonly six fields\n")
    with pytest.raises(ValueError, match="needs 7"):
        sts_task(bad)
    with pytest.raises(FileNotFoundError, match="sts-dev.csv"):
        sts_task(sts_dir, split="dev")
