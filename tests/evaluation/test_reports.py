"""evaluate.py on two tiny models: every report file, the embedding cache, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

import evaluate
from tests.helpers import write_topic_beir as write_beir


def run(args: list[str]) -> None:
    evaluate.main(args)


def test_reports_for_two_models(two_models, tmp_path: Path) -> None:
    tuned, base = two_models
    data = write_beir(tmp_path / "tinybeir")
    out = tmp_path / "reports"
    run(["--model", tuned, "--baseline", base, "--name", "ragcun", "--name", "base", "--data", str(data),
         "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--whiten"])
    for name in ("isotropy_comparison.csv", "isotropy_comparison.png", "rag_performance_comparison.csv",
                 "rag_performance.png", "reliability.png", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "rag_performance_comparison.csv").open()))
    assert [(r["model"], r["similarity"]) for r in rows] == [
        ("ragcun", "euclidean"), ("ragcun + whitening", "euclidean"), ("base", "cosine"), ("base + whitening", "euclidean")]
    for row in rows:  # one relevant document per query: 1/rank <= 1/log2(rank + 1) <= found in the top 10
        assert float(row["mrr@10"]) <= float(row["ndcg@10"]) <= float(row["recall@10"]), row
        assert 0.0 <= float(row["separation_auc"]) <= 1.0 and row["pvalue_precision_corpus"], row
        assert 0.0 <= float(row["null_ks_corpus"]) <= 1.0, row
    iso = list(csv.DictReader((out / "isotropy_comparison.csv").open()))
    assert [(r["model"], r["view"]) for r in iso] == [(r["model"], view) for r in rows for view in ("raw", "corpus-standardized")]
    assert "cov_identity_fro_floor" in iso[0]
    for row in iso:
        if row["view"] == "corpus-standardized":  # centred, unit average variance: only the shape is left to judge
            assert float(row["mean_norm"]) < 1e-6 and float(row["variance_mean"]) == pytest.approx(1.0, rel=1e-4)
    raw_base = next(r for r in iso if r["model"] == "base" and r["view"] == "raw")
    assert float(raw_base["variance_mean"]) < 0.1  # a cosine model's unit vectors: the raw view is far from it
    report = (out / "report.md").read_text()
    assert "**not** comparable across similarities" in report and "| ragcun | tinybeir | euclidean |" in report
    assert "| ragcun | tinybeir | corpus-standardized |" in report and "null_ks_corpus" in report


def test_the_training_runs_heldout_isotropy_joins_the_report(two_models, tmp_path: Path) -> None:
    import shutil

    tuned, _ = two_models
    run_dir = tmp_path / "run"
    shutil.copytree(tuned, run_dir / "final")
    heldout = {"heldout_mean_norm": 0.3, "heldout_variance_mean": 1.01, "heldout_variance_min": 0.8,
               "heldout_variance_max": 1.2, "heldout_cov_floor_ratio": 1.4, "heldout_is_isotropic": 1.0,
               "heldout_mrr@10": 0.9}
    (run_dir / "training_summary.json").write_text(json.dumps({"final_metrics": heldout}))
    out = tmp_path / "reports"
    run(["--model", str(run_dir / "final"), "--name", "ragcun", "--data", str(write_beir(tmp_path / "tinybeir")),
         "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    iso = list(csv.DictReader((out / "isotropy_comparison.csv").open()))
    row = next(r for r in iso if r["dataset"] == "held-out training sample")
    assert (row["model"], row["view"], row["is_isotropic"]) == ("ragcun", "raw", "True")
    assert float(row["cov_floor_ratio"]) == 1.4 and float(row["variance_max"]) == 1.2
    assert "| ragcun | held-out training sample | raw |" in (out / "report.md").read_text()
    # An unreadable summary is left out with a warning; the report is still written.
    (run_dir / "training_summary.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        run(["--model", str(run_dir / "final"), "--name", "ragcun", "--data", str(tmp_path / "tinybeir"),
             "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert not [r for r in csv.DictReader((out / "isotropy_comparison.csv").open()) if r["dataset"] == "held-out training sample"]


def test_embeddings_are_encoded_once(two_models, tmp_path: Path, monkeypatch) -> None:
    tuned, _ = two_models
    data = write_beir(tmp_path / "tinybeir")
    args = ["--model", tuned, "--data", str(data), "--output-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    run(args)
    cached = sorted((tmp_path / "c").glob("*.npy"))
    assert len(cached) == 2  # queries and corpus

    def refuse(*_args, **_kwargs):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(SentenceTransformer, "encode", refuse)
    run(args)
    assert sorted((tmp_path / "c").glob("*.npy")) == cached


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-corpus", "not a complete BEIR folder: missing .*corpus.jsonl"),
        ("unknown-qrels", "names ids that are not in the folder"),
        ("empty-corpus", "holds no documents"),
        ("no-model", "Could not load the base model"),
        ("unwritable", "Reports folder .* is not a writable directory"),
    ],
)
def test_bad_input_is_refused_and_old_reports_survive(two_models, tmp_path: Path, case: str, message: str, capsys) -> None:
    tuned, _ = two_models
    data = write_beir(tmp_path / "tinybeir", corpus=case != "missing-corpus", bad_qrels=case == "unknown-qrels")
    if case == "empty-corpus":
        (data / "corpus.jsonl").write_text("")
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.md").write_text("earlier report")
    model = str(tmp_path / "no-such-model") if case == "no-model" else tuned
    if case == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        out_arg = blocker / "reports"  # a path under a regular file can never be created
    else:
        out_arg = out
    with pytest.raises(SystemExit) as exit_info:
        run(["--model", model, "--data", str(data), "--output-dir", str(out_arg), "--cache-dir", str(tmp_path / "c")])
    import re

    assert re.search(message, str(exit_info.value)), str(exit_info.value)
    assert (out / "report.md").read_text() == "earlier report"


def test_mteb_local_tasks_agree_with_the_reports(two_models, tmp_path: Path) -> None:
    tuned, _ = two_models
    data = write_beir(tmp_path / "tinybeir")
    sts = tmp_path / "sts"
    sts.mkdir()
    pairs = [("planets orbit the sun", "the moon reflects sunlight", "3.0"), ("bread needs yeast", "boil pasta", "1.5"),
             ("jazz uses improvisation", "a violin has four strings", "2.0"), ("insulin controls blood sugar",
             "vaccines train the immune system", "2.5"), ("a comet has an icy tail", "sear the steak", "0.0")]
    (sts / "sts-test.csv").write_text("".join(f"main-captions\tMSRvid\t2012test\t{i}\t{g}\t{a}\t{b}\n"
                                              for i, (a, b, g) in enumerate(pairs)))
    out = tmp_path / "reports"
    run(["--model", tuned, "--name", "ragcun", "--data", str(data), "--mteb-local", "--sts", str(sts),
         "--output-dir", str(out), "--cache-dir", str(tmp_path / "c")])
    (revision,) = (out / "mteb" / "ragcun-eval__ragcun").iterdir()
    retrieval = json.loads((revision / "LocalBEIR-tinybeir.json").read_text())
    assert (revision / "LocalSTS-sts.json").is_file()  # a euclidean model runs on STS
    mteb_ndcg = retrieval["scores"]["test"][0]["ndcg_at_10"]
    (row,) = list(csv.DictReader((out / "rag_performance_comparison.csv").open()))
    assert mteb_ndcg == pytest.approx(float(row["ndcg@10"]), abs=1e-5)  # mteb and the report rank alike


def test_unknown_mteb_task_is_refused_with_close_matches(two_models, tmp_path: Path) -> None:
    tuned, _ = two_models
    with pytest.raises(SystemExit) as exit_info:
        run(["--model", tuned, "--mteb-tasks", "SciFakt", "--output-dir", str(tmp_path / "r")])
    assert "SciFact" in str(exit_info.value)
