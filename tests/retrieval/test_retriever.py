import json
import os
import sys
from pathlib import Path

import faiss  # noqa: F401  - a required dependency: without it this module fails loudly instead of skipping
import numpy as np
import pytest
from scipy.stats import kstest

import ragcun.retrieval.persistence as persistence_module
from ragcun import build_model
from ragcun.gaussian import distance_pvalue
from ragcun.identity import model_fingerprint
from ragcun.retrieval import GaussianRetriever, Hit
from ragcun.retrieval.config import _import_faiss

BACKENDS = ["faiss", "numpy"]
# Every index type and backend the retriever supports, with settings small enough for tiny corpora.
INDEXES = [
    pytest.param({"index": "flat", "backend": "faiss"}, id="flat-faiss"),
    pytest.param({"index": "flat", "backend": "numpy"}, id="flat-numpy"),
    pytest.param({"index": "binary", "backend": "faiss"}, id="binary-faiss"),
    pytest.param({"index": "binary", "backend": "numpy"}, id="binary-numpy"),
    pytest.param({"index": "binary", "backend": "numpy", "rerank_storage": "disk"}, id="binary-numpy-disk"),
    pytest.param({"index": "ivf", "ivf_train_min": 200, "nprobe": 4}, id="ivf"),
    pytest.param({"index": "hnsw"}, id="hnsw"),
]

DOCUMENTS = [
    "planets orbit the sun",
    "bread needs yeast to rise",
    "vaccines train the immune system",
    "a violin has four strings",
    "boil pasta in salted water",
]


def gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def topic_corpus(topics: int, per_topic: int, dim: int, seed: int, corr: float = 0.8):
    """Marginally N(0, I) documents in topics of ``per_topic``, and one query per topic drawn the same way:
    the exact 10 nearest documents of a query are (almost always) its topic's documents."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim))
    noise = np.sqrt(1 - corr**2)
    documents = corr * np.repeat(centres, per_topic, axis=0) + noise * rng.standard_normal((topics * per_topic, dim))
    queries = corr * centres + noise * rng.standard_normal((topics, dim))
    return documents.astype(np.float32), queries.astype(np.float32)


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    distances = np.sqrt(((queries[:, None, :].astype(np.float64) - corpus[None].astype(np.float64)) ** 2).sum(-1))
    order = np.argsort(distances, axis=1)[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def names(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


def hit_ids(results: list[list[Hit]]) -> np.ndarray:
    return np.array([[hit.id for hit in hits] for hits in results])


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), truth.tolist())]))


@pytest.fixture(scope="module")
def model(tiny_base_dir):
    return build_model(str(tiny_base_dir), output_dim=16, init="random", freeze_layers=0)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("retriever-model") / "tiny-ragcun"
    model.save(str(path))
    return path


class CountingModel:
    """A stand-in embedder with no prompts and no encode_query: plain ``encode`` only, calls recorded."""

    def __init__(self, dim: int = 8) -> None:
        self.dim, self.calls = dim, []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, **kwargs):
        self.calls.append((list(texts), kwargs))
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts]).astype(np.float32)


# ---------------------------------------------------------------- exactness and backends


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_search_matches_brute_force(backend: str) -> None:
    corpus, queries = gaussian(700, 32, 0), gaussian(25, 32, 1)
    retriever = GaussianRetriever(backend=backend)
    retriever.add_embeddings(corpus, names(700), ids=list(range(700)))
    results = retriever.search_embeddings(queries, top_k=10)
    expected_ids, expected_distances = brute_force(queries, corpus, 10)
    assert np.array_equal(hit_ids(results), expected_ids)
    distances = np.array([[hit.distance for hit in hits] for hits in results])
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    assert all(hits[i].document == f"doc {hits[i].id}" for hits in results for i in range(10))


@pytest.mark.parametrize("index", ["flat", "binary"])
def test_faiss_and_numpy_backends_agree(index: str) -> None:
    corpus, queries = gaussian(1500, 48, 2), gaussian(40, 48, 3)
    results = {}
    for backend in ("faiss", "numpy"):
        retriever = GaussianRetriever(index=index, backend=backend)
        assert retriever.backend == backend
        retriever.add_embeddings(corpus, names(1500))
        results[backend] = retriever.search_embeddings(queries, top_k=7)
    assert np.array_equal(hit_ids(results["faiss"]), hit_ids(results["numpy"]))
    for faiss_hits, numpy_hits in zip(results["faiss"], results["numpy"]):
        assert [h.distance for h in faiss_hits] == [h.distance for h in numpy_hits]  # same float64 recomputation


def test_auto_backend_uses_faiss_and_distances_are_l2_not_squared() -> None:
    retriever = GaussianRetriever()
    assert retriever.backend == "faiss"
    retriever.add_embeddings(np.array([[0.0, 0.0], [3.0, 4.0]]), ["origin", "far"])
    hits = retriever.search_embeddings(np.array([0.0, 0.0]), top_k=2)[0]
    assert [(h.document, h.distance) for h in hits] == [("origin", 0.0), ("far", 5.0)]


def test_auto_backend_falls_back_to_numpy_when_faiss_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    assert _import_faiss() is None
    retriever = GaussianRetriever()
    assert retriever.backend == "numpy"
    corpus, queries = gaussian(300, 16, 4), gaussian(5, 16, 5)
    retriever.add_embeddings(corpus, names(300))
    assert np.array_equal(hit_ids(retriever.search_embeddings(queries, top_k=4)), brute_force(queries, corpus, 4)[0])
    assert GaussianRetriever(index="binary").backend == "numpy"
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        GaussianRetriever(backend="faiss")
    with pytest.raises(ValueError, match="index='hnsw' needs FAISS"):
        GaussianRetriever(index="hnsw")


def test_numpy_backend_rejects_ivf_and_hnsw() -> None:
    for index in ("ivf", "hnsw"):
        with pytest.raises(ValueError, match=f"index='{index}' needs FAISS.*index='flat'"):
            GaussianRetriever(index=index, backend="numpy")


# ---------------------------------------------------------------- the model: prompts, cache, progress bar


def test_documents_and_queries_use_their_prompts(model) -> None:
    seen = []
    original = model.encode

    def recording_encode(*args, **kwargs):
        seen.append((kwargs.get("prompt_name"), kwargs.get("task"), kwargs.get("normalize_embeddings")))
        return original(*args, **kwargs)

    model.encode = recording_encode
    try:
        retriever = GaussianRetriever(model=model)
        retriever.add_documents(DOCUMENTS)
        hits = retriever.search("what orbits the sun?", top_k=5)
    finally:
        del model.encode
    assert seen == [("document", "document", False), ("query", "query", False)]
    # The distances are between the query-prompt and document-prompt embeddings, un-normalized.
    query = model.encode("what orbits the sun?", prompt_name="query")
    documents = model.encode(DOCUMENTS, prompt_name="document")
    expected = {doc: float(np.linalg.norm(query.astype(np.float64) - vec)) for doc, vec in zip(DOCUMENTS, documents.astype(np.float64))}
    assert {h.document: h.distance for h in hits} == pytest.approx(expected, rel=1e-6)
    plain = model.encode("what orbits the sun?")
    assert not np.allclose(plain, query)  # the prompt changes the embedding, so using it matters


def test_model_without_prompts_encodes_plain_text_and_shows_progress_on_long_input() -> None:
    fake = CountingModel()
    retriever = GaussianRetriever(model=fake)
    retriever.add_documents(DOCUMENTS)
    long_input = [f"document number {i}" for i in range(300)]
    retriever.add_documents(long_input)
    assert fake.calls[0][1]["show_progress_bar"] is False and fake.calls[1][1]["show_progress_bar"] is True
    assert all(call[1]["normalize_embeddings"] is False for call in fake.calls)
    assert retriever.retrieve("document number 7", top_k=1) == [("document number 7", 0.0)]  # same text, same vector


def test_query_cache_skips_the_model_and_is_bounded() -> None:
    fake = CountingModel()
    retriever = GaussianRetriever(model=fake, query_cache_size=2)
    retriever.add_documents(DOCUMENTS)
    calls = len(fake.calls)
    first = retriever.retrieve("query one")
    assert len(fake.calls) == calls + 1
    assert retriever.retrieve("query one") == first
    assert len(fake.calls) == calls + 1  # served from the cache
    assert retriever.cache_info().hits == 1
    retriever.retrieve_batch(["query two", "query three", "query two"])
    assert fake.calls[-1][0] == ["query two", "query three"]  # one model call, duplicates encoded once
    assert retriever.cache_info().currsize == 2  # "query one" was evicted (least recently used)
    retriever.retrieve("query one")
    assert fake.calls[-1][0] == ["query one"]
    retriever.retrieve("query three")
    assert fake.calls[-1][0] == ["query one"]  # still cached
    uncached = GaussianRetriever(model=fake, query_cache_size=0)
    uncached.add_documents(DOCUMENTS)
    before = len(fake.calls)
    uncached.retrieve("query one")
    uncached.retrieve("query one")
    assert len(fake.calls) == before + 2 and uncached.cache_info().currsize == 0


def test_retrieve_search_and_batch_forms(model) -> None:
    retriever = GaussianRetriever(model=model)
    ids = retriever.add_documents(DOCUMENTS, metadata=[{"n": i} for i in range(5)])
    assert ids == [0, 1, 2, 3, 4]
    pairs = retriever.retrieve("bread and yeast", top_k=3)
    assert len(pairs) == 3 and all(type(doc) is str and type(dist) is float for doc, dist in pairs)
    assert [d for _, d in pairs] == sorted(d for _, d in pairs)
    hits = retriever.search("bread and yeast", top_k=3)
    assert [(h.document, h.distance) for h in hits] == pairs
    assert all(h.metadata == {"n": DOCUMENTS.index(h.document)} and h.id == DOCUMENTS.index(h.document) for h in hits)
    batch = retriever.retrieve_batch(["bread and yeast", "music"], top_k=3)
    assert batch[0] == pairs and batch[1] == retriever.retrieve("music", top_k=3)


# ---------------------------------------------------------------- remove, replace, len


@pytest.mark.parametrize("options", INDEXES)
def test_remove_replace_and_len(options: dict) -> None:
    corpus = gaussian(400, 16, 6)
    retriever = GaussianRetriever(**options)
    retriever.add_embeddings(corpus, names(400), ids=[f"id{i}" for i in range(400)], metadata=[{"i": i} for i in range(400)])
    assert len(retriever) == 400 and "id5" in retriever
    # Replace id5 with a new vector and text: same count, the old version is gone.
    new_vector = gaussian(1, 16, 7)
    retriever.add_embeddings(new_vector, ["replacement"], ids=["id5"], metadata=[{"new": True}])
    assert len(retriever) == 400
    hit = retriever.search_embeddings(new_vector, top_k=1)[0][0]
    assert (hit.id, hit.document, hit.distance, hit.metadata) == ("id5", "replacement", 0.0, {"new": True})
    assert retriever.search_embeddings(corpus[5], top_k=1)[0][0].id != "id5"
    # Remove: gone from results and from len; an unknown id removes nothing.
    assert retriever.search_embeddings(corpus[9], top_k=1)[0][0].id == "id9"
    assert retriever.remove(["id9", "id10"]) == 2
    assert len(retriever) == 398 and "id9" not in retriever
    assert "id9" not in {h.id for h in retriever.search_embeddings(corpus[9], top_k=20)[0]}
    with pytest.raises(KeyError, match="id9.*nothing was removed"):
        retriever.remove(["id11", "id9"])
    assert len(retriever) == 398 and "id11" in retriever
    # The remaining documents keep their own text and metadata.
    hit = retriever.search_embeddings(corpus[200], top_k=1)[0][0]
    assert (hit.id, hit.document, hit.metadata) == ("id200", "doc 200", {"i": 200})


def test_automatic_ids_skip_ids_in_use() -> None:
    retriever = GaussianRetriever()
    retriever.add_embeddings(gaussian(2, 4, 8), ["a", "b"], ids=[0, 2])
    assert retriever.add_embeddings(gaussian(3, 4, 9), ["c", "d", "e"]) == [1, 3, 4]
    assert len(retriever) == 5 and retriever.get(2) == ("b", None)


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("options", INDEXES)
def test_save_load_round_trip(options: dict, tmp_path: Path) -> None:
    corpus, queries = gaussian(500, 16, 10), gaussian(12, 16, 11)
    retriever = GaussianRetriever(**options)
    retriever.add_embeddings(corpus, names(500), ids=[f"d{i}" for i in range(500)], metadata=[{"i": i, "tag": "ü"} for i in range(500)])
    retriever.remove(["d3"])
    before = retriever.search_embeddings(queries, top_k=8)
    retriever.save(tmp_path / "index")
    loaded = GaussianRetriever.load(tmp_path / "index")
    assert len(loaded) == 499 and loaded.index_type == options["index"] and loaded.backend == retriever.backend
    assert loaded.search_embeddings(queries, top_k=8) == before
    # Still fully usable: auto ids continue, replacement and removal work after loading.
    assert loaded.add_embeddings(gaussian(1, 16, 12), ["new"]) == [0]
    loaded.remove(["d4"])
    assert len(loaded) == 499
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["count"] == 499 and manifest["dimension"] == 16
    assert manifest["similarity"] == "euclidean" and manifest["index"]["type"] == options["index"]
    files = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    assert not any(name.endswith((".pkl", ".pickle")) for name in files)
    for name in files:
        if name.endswith(".npy"):
            np.load(tmp_path / "index" / name, allow_pickle=False)  # raises if anything were pickled
    assert not list(tmp_path.glob(".index.*"))  # no temporary or old copies left behind


def test_ivf_trains_once_enough_vectors_and_survives_save(tmp_path: Path) -> None:
    corpus, queries = gaussian(600, 16, 13), gaussian(10, 16, 14)
    retriever = GaussianRetriever(index="ivf", ivf_train_min=500)
    retriever.add_embeddings(corpus[:300], names(300))
    assert not retriever._store.trained
    assert np.array_equal(hit_ids(retriever.search_embeddings(queries, top_k=5)), brute_force(queries, corpus[:300], 5)[0])
    retriever.add_embeddings(corpus[300:], names(600)[300:])
    assert retriever._store.trained and retriever._store.nlist == round(4 * np.sqrt(600))
    retriever.save(tmp_path / "ivf")
    loaded = GaussianRetriever.load(tmp_path / "ivf")
    assert loaded._store.trained and loaded.search_embeddings(queries, top_k=5) == retriever.search_embeddings(queries, top_k=5)


def test_round_trip_with_a_model_from_its_folder(model, model_dir: Path, tmp_path: Path) -> None:
    retriever = GaussianRetriever(str(model_dir))
    retriever.add_documents(DOCUMENTS, ids=["a", "b", "c", "d", "e"])
    before = retriever.search("what orbits the sun?", top_k=5)
    retriever.save(tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text())
    assert manifest["model"]["name_or_path"] == str(model_dir.resolve())
    assert manifest["model"]["fingerprint"] == model_fingerprint(model)  # same weights built in memory or loaded
    assert manifest["model"]["prompts"]["query"] == model.prompts["query"] and manifest["model"]["dimension"] == 16
    loaded = GaussianRetriever.load(tmp_path / "saved")  # model found from the manifest
    assert loaded.search("what orbits the sun?", top_k=5) == before
    assert GaussianRetriever.load(tmp_path / "saved", model=model).search("what orbits the sun?", top_k=5) == before
    # the model as a folder, in the one model parameter (second positional), as the constructor takes it
    by_folder = GaussianRetriever.load(tmp_path / "saved", str(model_dir))
    assert by_folder.model_path == str(model_dir) and by_folder.search("what orbits the sun?", top_k=5) == before
    assert GaussianRetriever.load(tmp_path / "saved", model_path=str(model_dir)).search("what orbits the sun?",
                                                                                       top_k=5) == before
    assert GaussianRetriever(model=str(model_dir)).model_path == str(model_dir)


def test_loading_with_another_model_is_refused(model, tiny_base_dir, tmp_path: Path) -> None:
    retriever = GaussianRetriever(model=model)
    retriever.add_documents(DOCUMENTS)
    retriever.save(tmp_path / "saved")
    other = build_model(str(tiny_base_dir), output_dim=16, init="random", freeze_layers=0, seed=1)
    with pytest.raises(ValueError, match="built with a different model.*allow_model_mismatch=True"):
        GaussianRetriever.load(tmp_path / "saved", model=other)
    loaded = GaussianRetriever.load(tmp_path / "saved", model=other, allow_model_mismatch=True)
    assert len(loaded) == 5
    narrow = build_model(str(tiny_base_dir), output_dim=8, init="random", freeze_layers=0)
    for allow in (False, True):
        with pytest.raises(ValueError, match="outputs 8-dimensional embeddings.*holds 16-dimensional"):
            GaussianRetriever.load(tmp_path / "saved", model=narrow, allow_model_mismatch=allow)


@pytest.mark.parametrize("crash_in", ["faiss.write_index", "_write_json", "_write_records"])
def test_crash_during_save_leaves_the_previous_copy_loadable(crash_in: str, tmp_path: Path, monkeypatch) -> None:
    corpus, queries = gaussian(300, 16, 15), gaussian(5, 16, 16)
    retriever = GaussianRetriever()
    retriever.add_embeddings(corpus[:200], names(200))
    retriever.save(tmp_path / "index")
    saved_results = retriever.search_embeddings(queries, top_k=5)
    retriever.add_embeddings(corpus[200:], names(300)[200:])

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    if crash_in == "faiss.write_index":
        import faiss

        monkeypatch.setattr(faiss, "write_index", crash)
    else:
        monkeypatch.setattr(persistence_module, crash_in, crash)
    with pytest.raises(OSError, match="simulated"):
        retriever.save(tmp_path / "index")
    monkeypatch.undo()
    old = GaussianRetriever.load(tmp_path / "index")
    assert len(old) == 200 and old.search_embeddings(queries, top_k=5) == saved_results
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # the half-written copy was cleaned up
    assert len(retriever) == 300  # the in-memory retriever lost nothing either
    retriever.save(tmp_path / "index")
    assert len(GaussianRetriever.load(tmp_path / "index")) == 300


def test_crash_between_renames_falls_back_to_the_old_copy(tmp_path: Path, monkeypatch) -> None:
    retriever = GaussianRetriever(backend="numpy")
    retriever.add_embeddings(gaussian(50, 8, 17), names(50))
    retriever.save(tmp_path / "index")
    retriever.add_embeddings(gaussian(10, 8, 18), names(10))
    real_replace, calls = os.replace, []

    def replace_then_die(source, destination):
        calls.append(source)
        if len(calls) == 2:  # the old copy is aside, the new one not yet in place
            raise KeyboardInterrupt("power cut (simulated)")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        retriever.save(tmp_path / "index")
    monkeypatch.undo()
    assert not (tmp_path / "index").exists()
    with pytest.warns(UserWarning, match="interrupted save"):
        old = GaussianRetriever.load(tmp_path / "index")
    assert len(old) == 50


def test_save_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    retriever = GaussianRetriever(backend="numpy")
    retriever.add_embeddings(gaussian(3, 4, 19), names(3))
    with pytest.raises(ValueError, match="not a saved GaussianRetriever; refusing to overwrite"):
        retriever.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("options", [pytest.param({"backend": "faiss"}), {"backend": "numpy"}])
def test_missing_or_corrupted_files_are_clear_errors(options: dict, tmp_path: Path) -> None:
    retriever = GaussianRetriever(**options)
    retriever.add_embeddings(gaussian(40, 8, 20), names(40))
    path = retriever.save(tmp_path / "index")
    index_file = path / ("index.faiss" if options["backend"] == "faiss" else "vectors.npy")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        GaussianRetriever.load(tmp_path / "nowhere")
    original = index_file.read_bytes()
    index_file.write_bytes(original[: len(original) // 2])
    with pytest.raises(ValueError, match="corrupted: its sha256 does not match"):
        GaussianRetriever.load(path)
    with pytest.raises(ValueError, match="corrupted or unreadable"):
        GaussianRetriever.load(path, verify_checksums=False)
    index_file.unlink()
    with pytest.raises(FileNotFoundError, match=f"Missing file .*{index_file.name}"):
        GaussianRetriever.load(path)
    index_file.write_bytes(original)
    assert len(GaussianRetriever.load(path)) == 40  # restored: loads again

    records = path / "records.jsonl"
    good_records = records.read_text()
    records.write_text(good_records.replace('"document"', '"documnt"', 1))
    with pytest.raises(ValueError, match="records.jsonl line 1 is corrupted"):
        GaussianRetriever.load(path, verify_checksums=False)
    records.write_text(good_records)

    manifest = path / "manifest.json"
    good_manifest = manifest.read_text()
    manifest.write_text(good_manifest[:50])
    with pytest.raises(ValueError, match="manifest.json is corrupted"):
        GaussianRetriever.load(path)
    manifest.write_text(json.dumps({**json.loads(good_manifest), "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        GaussianRetriever.load(path)
    manifest.unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        GaussianRetriever.load(path)


# ---------------------------------------------------------------- p-values


def test_pvalues_are_uniform_for_independent_pairs_and_tiny_for_near_duplicates() -> None:
    dim = 64
    q, d = gaussian(2000, dim, 21), gaussian(2000, dim, 22)
    pvalues = distance_pvalue(np.linalg.norm(q - d, axis=1), dim)
    assert kstest(pvalues, "uniform").pvalue > 0.01
    assert 0.4 < np.mean(pvalues) < 0.6 and np.mean(pvalues < 0.01) < 0.02
    near = d + 0.1 * gaussian(2000, dim, 23)
    assert distance_pvalue(np.linalg.norm(near - d, axis=1), dim).max() < 1e-20
    # Not uniform if the distances are squared or unscaled: the test above has power.
    assert kstest(distance_pvalue(np.linalg.norm(q - d, axis=1) * 0.9, dim), "uniform").pvalue < 1e-6


def test_hits_carry_pvalues_and_max_pvalue_filters() -> None:
    dim = 64
    corpus = gaussian(1000, dim, 24)
    query = corpus[17] + 0.2 * gaussian(1, dim, 25)[0]
    retriever = GaussianRetriever(backend="numpy", calibration="global")
    retriever.add_embeddings(corpus, names(1000))
    hits = retriever.search_embeddings(query, top_k=50)[0]
    assert all(h.calibration == "global" for h in hits)
    assert all(h.pvalue == pytest.approx(distance_pvalue(h.distance, dim), rel=1e-12) for h in hits)
    assert hits[0].id == 17 and hits[0].pvalue < 1e-20 and min(h.pvalue for h in hits[1:]) > 1e-4
    filtered = retriever.search_embeddings(query, top_k=50, max_pvalue=0.001)[0]
    assert [h.id for h in filtered] == [17]
    assert retriever.search_embeddings(query, top_k=50, max_pvalue=1.0)[0] == hits
    # On pure noise about 1% of all query-document pairs pass at the 1% level (averaged over documents: for
    # one fixed document the distances are non-central, so the level holds over pairs, not per document).
    independent = GaussianRetriever(backend="numpy", calibration="global")
    independent.add_embeddings(gaussian(300, dim, 26), names(300))
    passed = [len(hits) for hits in independent.search_embeddings(gaussian(300, dim, 27), top_k=300, max_pvalue=0.01)]
    assert 0.005 < np.sum(passed) / 300**2 < 0.02


# ---------------------------------------------------------------- corpus calibration


def domain(n: int, dim: int, seed: int, offset: float = 3.0, spread: float = 0.6) -> np.ndarray:
    """One domain of an N(0, I) world: off-centre (mean of norm ``offset``) and narrower (``spread``)."""
    rng = np.random.default_rng(seed)
    centre = np.random.default_rng(0).standard_normal(dim)
    centre *= offset / np.linalg.norm(centre)
    return (centre + spread * rng.standard_normal((n, dim))).astype(np.float32)


def pooled_pvalues(retriever: GaussianRetriever, queries: np.ndarray) -> np.ndarray:
    return np.array([h.pvalue for hits in retriever.search_embeddings(queries, top_k=len(retriever)) for h in hits])


@pytest.mark.parametrize("backend", BACKENDS)
def test_corpus_calibration_is_uniform_on_an_off_centre_domain_where_global_is_not(backend: str) -> None:
    dim, corpus, queries = 64, domain(1000, 64, 1), domain(40, 64, 2)  # queries unrelated to every document
    corpus_calibrated = GaussianRetriever(backend=backend)
    corpus_calibrated.add_embeddings(corpus, names(1000))
    global_null = GaussianRetriever(backend=backend, calibration="global")
    global_null.add_embeddings(corpus, names(1000))
    calibrated, raw = pooled_pvalues(corpus_calibrated, queries), pooled_pvalues(global_null, queries)
    assert kstest(calibrated, "uniform").statistic < 0.03 and 0.005 < np.mean(calibrated < 0.01) < 0.02
    assert np.mean(raw < 0.01) > 0.99  # the global null calls every in-domain pair "closer than chance"
    # Same ranking and distances either way: only the p-values change.
    for a, b in zip(corpus_calibrated.search_embeddings(queries, top_k=20), global_null.search_embeddings(queries, top_k=20)):
        assert [(h.id, h.distance) for h in a] == [(h.id, h.distance) for h in b]
        assert {h.calibration for h in a} == {"corpus"} and {h.calibration for h in b} == {"global"}
    # A near-duplicate is still far below the level, and max_pvalue keeps only it.
    query = corpus[17] + 0.05 * gaussian(1, dim, 3)[0]
    assert [h.id for h in corpus_calibrated.search_embeddings(query, top_k=50, max_pvalue=0.001)[0]] == [17]


@pytest.mark.parametrize("options", INDEXES)
def test_corpus_calibration_follows_adds_and_removes_and_survives_save(options: dict, tmp_path: Path) -> None:
    corpus = domain(600, 16, 4)
    retriever = GaussianRetriever(**options)
    retriever.add_embeddings(corpus[:400], names(400), ids=list(range(400)))
    retriever.add_embeddings(corpus[400:500], names(100), ids=list(range(300, 400)))  # replaces 300-399
    retriever.remove(list(range(0, 50)))
    kept = np.concatenate([corpus[50:300], corpus[400:500]]).astype(np.float64)
    null = retriever.corpus_null
    assert null.count == len(retriever) == 350
    np.testing.assert_allclose(null.location, kept.mean(axis=0), atol=1e-9)
    assert null.variance == pytest.approx(kept.var(axis=0, ddof=1).mean(), rel=1e-9)
    queries = domain(5, 16, 5)
    before = retriever.search_embeddings(queries, top_k=8)
    retriever.save(tmp_path / "index")
    loaded = GaussianRetriever.load(tmp_path / "index")
    assert loaded.calibration == "corpus" and loaded.search_embeddings(queries, top_k=8) == before
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["calibration"]["mode"] == "corpus" and manifest["calibration"]["corpus"]["count"] == 350
    # The calibration can be switched at load; rankings stay.
    as_global = GaussianRetriever.load(tmp_path / "index", calibration="global")
    assert [[h.id for h in hits] for hits in as_global.search_embeddings(queries, top_k=8)] == [[h.id for h in hits] for hits in before]
    assert {h.calibration for hits in as_global.search_embeddings(queries, top_k=8) for h in hits} == {"global"}


@pytest.mark.parametrize("options", [{"index": "flat", "backend": "numpy"}, {"index": "binary", "backend": "numpy"}])
def test_an_index_saved_without_calibration_loads_and_calibrates(options: dict, tmp_path: Path) -> None:
    corpus, queries = domain(300, 16, 6), domain(4, 16, 7)
    retriever = GaussianRetriever(**options, calibration="global")  # global: the binary codes are not centred
    retriever.add_embeddings(corpus, names(300))
    retriever.save(tmp_path / "index")
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # What the format held before calibration existed (version 1): no calibration entry, no code centre.
    manifest["format_version"] = 1
    del manifest["calibration"]
    manifest["index"]["state"].pop("centre", None)
    manifest_path.write_text(json.dumps(manifest))
    loaded = GaussianRetriever.load(tmp_path / "index")
    assert loaded.calibration == "corpus" and loaded.corpus_null.count == 300
    np.testing.assert_allclose(loaded.corpus_null.location, corpus.astype(np.float64).mean(axis=0), atol=1e-9)
    hits = loaded.search_embeddings(queries, top_k=5)
    assert {h.calibration for h in hits[0]} == {"corpus"}
    assert [[h.id for h in q] for q in hits] == [[h.id for h in q] for q in retriever.search_embeddings(queries, top_k=5)]


def test_a_small_corpus_falls_back_to_the_global_null_with_one_warning() -> None:
    retriever = GaussianRetriever(backend="numpy")
    retriever.add_embeddings(gaussian(5, 16, 8), names(5))
    with pytest.warns(UserWarning, match="fewer than calibration_min_documents=100"):
        hits = retriever.search_embeddings(gaussian(1, 16, 9), top_k=3)[0]
    assert {h.calibration for h in hits} == {"global"}
    assert all(h.pvalue == pytest.approx(distance_pvalue(h.distance, 16), rel=1e-12) for h in hits)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever.search_embeddings(gaussian(1, 16, 10), top_k=3)  # warned once, not at every search
    small = GaussianRetriever(backend="numpy", calibration_min_documents=5)
    small.add_embeddings(gaussian(5, 16, 8), names(5))
    assert {h.calibration for h in small.search_embeddings(gaussian(1, 16, 9), top_k=3)[0]} == {"corpus"}


def test_a_cosine_model_gets_calibrated_pvalues_from_its_corpus() -> None:
    class UnitVectorModel(CountingModel):
        similarity_fn_name = "cosine"

        def encode(self, texts, **kwargs):
            vectors = super().encode(texts, **kwargs) + 2.0  # one off-centre direction, as real models have
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    import warnings

    with pytest.warns(UserWarning, match="global p-values assume un-normalized N\\(0, I\\) embeddings"):
        GaussianRetriever(model=UnitVectorModel(), calibration="global")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retriever = GaussianRetriever(model=UnitVectorModel(), backend="numpy")  # corpus calibration: no warning
    retriever.add_documents([f"document {i}" for i in range(400)])
    pvalues = np.array([h.pvalue for hits in retriever.search_batch([f"query {i}" for i in range(20)], top_k=400) for h in hits])
    assert kstest(pvalues, "uniform").statistic < 0.05  # unrelated texts: uniform under the corpus's own null


def test_calibration_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="Unknown calibration 'chi2': choose 'corpus'"):
        GaussianRetriever(calibration="chi2")
    with pytest.raises(ValueError, match="calibration_min_documents must be an integer >= 2"):
        GaussianRetriever(calibration_min_documents=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_codes_are_centred_on_an_off_centre_corpus(backend: str) -> None:
    corpus, queries = topic_corpus(topics=200, per_topic=10, dim=64, seed=11)
    corpus, queries = corpus + 3.0, queries + 3.0  # every sign positive about the origin: codes carry nothing
    exact = GaussianRetriever(backend=backend)
    exact.add_embeddings(corpus, names(2000))
    truth = hit_ids(exact.search_embeddings(queries, top_k=10))
    recalls = {}
    for calibration in ("corpus", "global"):
        binary = GaussianRetriever(index="binary", backend=backend, rerank_factor=10, calibration=calibration)
        binary.add_embeddings(corpus, names(2000))
        recalls[calibration] = recall_at_10(hit_ids(binary.search_embeddings(queries, top_k=10)), truth)
    assert recalls["corpus"] >= 0.9 and recalls["global"] < 0.5, recalls


# ---------------------------------------------------------------- compressed and approximate indexes


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_rerank_recall_on_gaussian_data(backend: str) -> None:
    corpus, queries = topic_corpus(topics=200, per_topic=10, dim=64, seed=28)
    exact = GaussianRetriever(backend=backend)
    exact.add_embeddings(corpus, names(2000))
    truth = hit_ids(exact.search_embeddings(queries, top_k=10))
    binary = GaussianRetriever(index="binary", backend=backend, rerank_factor=10)
    binary.add_embeddings(corpus, names(2000))
    found = binary.search_embeddings(queries, top_k=10)
    assert recall_at_10(hit_ids(found), truth) >= 0.9
    assert all(h.distance == pytest.approx(float(np.linalg.norm(queries[0] - corpus[h.id])), rel=1e-6) for h in found[0])
    memory = binary.memory_usage()
    assert memory["codes"] // 2000 == 8  # 64 dimensions -> 8 bytes of sign code
    assert memory["rerank_vectors_in_ram"] >= 2000 * 64 * 4
    # A rerank factor of 1 is a pure Hamming search: clearly worse, so the rerank is doing the work.
    binary.rerank_factor = 1
    assert recall_at_10(hit_ids(binary.search_embeddings(queries, top_k=10)), truth) < 0.9


def test_binary_with_vectors_on_disk_holds_only_codes_in_ram(tmp_path: Path) -> None:
    corpus, queries = topic_corpus(topics=50, per_topic=10, dim=64, seed=29)
    in_ram = GaussianRetriever(index="binary", backend="numpy")
    on_disk = GaussianRetriever(index="binary", backend="numpy", rerank_storage="disk", storage_dir=str(tmp_path / "vectors"))
    for retriever in (in_ram, on_disk):
        retriever.add_embeddings(corpus, names(500))
        retriever.remove([3, 4])
    assert on_disk.search_embeddings(queries, top_k=10) == in_ram.search_embeddings(queries, top_k=10)
    memory = on_disk.memory_usage()
    assert memory["rerank_vectors_in_ram"] == 0 and memory["codes"] == 498 * 8
    vector_file = Path(on_disk._store._vectors.path)
    assert vector_file.stat().st_size == 498 * 64 * 4
    on_disk.close()
    assert not vector_file.exists()


@pytest.mark.parametrize(("options", "minimum"), [({"index": "ivf", "ivf_train_min": 1000}, 0.9), ({"index": "hnsw"}, 0.95)])
def test_ivf_and_hnsw_recall(options: dict, minimum: float) -> None:
    corpus, queries = topic_corpus(topics=300, per_topic=10, dim=32, seed=30)
    exact = GaussianRetriever()
    exact.add_embeddings(corpus, names(3000))
    truth = hit_ids(exact.search_embeddings(queries, top_k=10))
    approximate = GaussianRetriever(**options)
    approximate.add_embeddings(corpus, names(3000))
    assert recall_at_10(hit_ids(approximate.search_embeddings(queries, top_k=10)), truth) >= minimum
    # Removal (HNSW rebuilds its graph) keeps the rest searchable.
    approximate.remove(list(range(0, 3000, 2)))
    hits = approximate.search_embeddings(corpus[1::2][:50], top_k=1)
    assert np.mean([h[0].id == 2 * i + 1 for i, h in enumerate(hits)]) >= 0.9


# ---------------------------------------------------------------- bad input


def test_bad_inputs_are_clear_errors_and_lose_nothing(model) -> None:
    retriever = GaussianRetriever(model=model)
    with pytest.raises(ValueError, match="retriever is empty: add documents"):
        retriever.retrieve("anything")
    retriever.add_documents(DOCUMENTS[:3], ids=["a", "b", "c"])
    state = retriever.retrieve("bread", top_k=3)

    for bad_top_k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            retriever.retrieve("bread", top_k=bad_top_k)
    assert len(retriever.retrieve("bread", top_k=100)) == 3  # more than there is: all of it
    with pytest.raises(ValueError, match=r"max_pvalue must be a number in \(0, 1\]"):
        retriever.retrieve("bread", max_pvalue=0)
    with pytest.raises(ValueError, match="Query 0 is empty"):
        retriever.retrieve("  ")
    with pytest.raises(TypeError, match="query must be a string"):
        retriever.retrieve(["bread"])
    with pytest.raises(TypeError, match="use retrieve"):
        retriever.retrieve_batch("bread")

    bad_calls = [
        ((["fine", ""],), {}, ValueError, "Document 1 is empty"),
        ((["fine", "also fine", 42],), {}, TypeError, "Document 2 is a int, not a string"),
        (("a single string",), {}, TypeError, "wrap it in a list"),
        ((["x", "y"],), {"ids": ["p", "p"]}, ValueError, "Duplicate id 'p' at positions 0 and 1"),
        ((["x", "y"],), {"ids": ["p"]}, ValueError, "Got 1 ids for 2 documents"),
        ((["x", "y"],), {"metadata": [{}]}, ValueError, "Got 1 metadata entries for 2 documents"),
        ((["x"],), {"metadata": [{"when": object()}]}, ValueError, r"metadata\[0\] is not JSON-serializable"),
        ((["x"],), {"ids": [1.5]}, TypeError, r"ids\[0\] is a float"),
    ]
    for args, kwargs, error, message in bad_calls:
        with pytest.raises(error, match=message):
            retriever.add_documents(*args, **kwargs)
        assert len(retriever) == 3 and retriever.retrieve("bread", top_k=3) == state  # nothing lost or added

    with pytest.raises(ValueError, match="have 8 dimensions, but this retriever holds 16"):
        retriever.add_embeddings(np.zeros((1, 8)), ["x"])
    with pytest.raises(ValueError, match="NaN or inf"):
        retriever.add_embeddings(np.full((1, 16), np.nan), ["x"])
    with pytest.raises(ValueError, match="Got 2 embeddings for 1 documents"):
        retriever.add_embeddings(np.zeros((2, 16)), ["x"])
    assert len(retriever) == 3


def test_constructor_errors_and_text_without_model() -> None:
    with pytest.raises(ValueError, match="Unknown index 'annoy'"):
        GaussianRetriever(index="annoy")
    with pytest.raises(ValueError, match="Unknown backend 'torch'"):
        GaussianRetriever(backend="torch")
    with pytest.raises(ValueError, match="rerank_factor must be an integer >= 1"):
        GaussianRetriever(rerank_factor=0)
    with pytest.raises(ValueError, match="Two models were given.*pass the model once"):
        GaussianRetriever("some/path", model="other/path")
    with pytest.raises(ValueError, match="Could not load the base model 'no-such-org/no-such-model'"):
        GaussianRetriever("no-such-org/no-such-model")
    retriever = GaussianRetriever(backend="numpy")
    retriever.add_embeddings(gaussian(3, 4, 31), names(3))
    with pytest.raises(ValueError, match="has no model.*search_embeddings"):
        retriever.retrieve("text query")
    with pytest.raises(ValueError, match="has no model"):
        retriever.add_documents(["text"])
    assert len(retriever) == 3
