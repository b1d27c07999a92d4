"""Head-only training (train_head_only): frozen base encoded once, a Dense head trained on the cached vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from ragcun.cached_input import CachedEmbeddings
from tests.conftest import run_train, small_recipe


def head_recipe(tmp_path: Path, **overrides) -> Path:
    settings = dict(train_head_only=True, embedding_cache_dir=str(tmp_path / "cache"), init="scaled", output_dim=32,
                    per_device_train_batch_size=64, learning_rate=1e-3, max_steps=12, eval_steps=6, save_steps=4)
    return small_recipe(tmp_path, drop=("freeze_layers",), **{**settings, **overrides})


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("head")
    result = run_train(["--config", str(head_recipe(tmp))])
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def test_saved_model_is_the_frozen_base_then_the_trained_head(head_run: Path) -> None:
    final = head_run / "run" / "final"
    modules = json.loads((final / "modules.json").read_text())
    assert "CachedEmbeddings" not in json.dumps(modules)
    model = SentenceTransformer(str(final))
    base = SentenceTransformer(str(head_run / "run" / "tiny-base"))
    assert model.similarity_fn_name == "euclidean" and model.prompts == base.prompts
    assert [type(m).__name__ for m in model][: len(base)] == [type(m).__name__ for m in base]  # Normalize kept
    head = model[len(base)]
    texts = ["planets orbit the sun", "bread needs yeast to rise"]
    with torch.no_grad():
        expected = head({"sentence_embedding": base.encode(texts, prompt_name="query", convert_to_tensor=True).clone()})
    assert torch.allclose(model.encode(texts, prompt_name="query", convert_to_tensor=True),
                          expected["sentence_embedding"], atol=1e-5)
    assert not torch.allclose(head.linear.weight, head.linear.weight[0, 0] * torch.eye(32))  # the head trained
    frozen = dict(base.named_parameters())
    shared = [(name, p) for name, p in model.named_parameters() if name in frozen]
    assert len(shared) == len(frozen)  # the backbone is the base, bit for bit
    for name, parameter in shared:
        assert torch.equal(parameter, frozen[name]), name


def test_scaled_head_ranks_like_the_base_at_step_0_and_trains(head_run: Path) -> None:
    summary = json.loads((head_run / "run" / "training_summary.json").read_text())
    assert summary["global_step"] == 12
    # a uniform scale of the base's normalized output: L2 ranks exactly as the base's cosine
    assert summary["isotropy_before"]["heldout_mrr@10"] == pytest.approx(summary["base_metrics"]["heldout_mrr@10"])
    assert 0.7 < summary["isotropy_before"]["heldout_variance_mean"] < 1.3  # from 1/D for the normalized base
    logged = [entry for entry in summary["log_history"] if "contrastive" in entry and "sigreg" in entry]
    assert len(logged) == 12


def test_saved_model_encodes_training_texts_as_the_head_saw_them(head_run: Path) -> None:
    """The table was encoded with the prompts training looked texts up with: the saved model agrees with it."""
    table_path = next((head_run / "cache").glob("*.table.npy"))
    lookup = CachedEmbeddings(str(table_path), str(table_path.with_name(table_path.name.replace(".table.npy", ".texts.json"))))
    model = SentenceTransformer(str(head_run / "run" / "final"))
    head = model[len(model) - 1]
    query_prompt = model.prompts["query"]
    queries = [key[len(query_prompt):] for key in lookup.index if key.startswith(query_prompt)][:4]
    assert len(queries) == 4
    with torch.no_grad():
        rows = lookup(lookup.preprocess(queries, prompt=query_prompt))["sentence_embedding"]
        expected = head({"sentence_embedding": rows.clone()})["sentence_embedding"]
    assert torch.allclose(model.encode(queries, prompt_name="query", convert_to_tensor=True), expected, atol=1e-4)
    with pytest.raises(ValueError, match="1 of 2 texts were not encoded"):
        lookup(lookup.preprocess([queries[0], "unseen"], prompt=query_prompt))


def test_cache_is_reused_and_keyed_by_sequence_length(head_run: Path, tmp_path: Path) -> None:
    cache = head_run / "cache"
    before = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    same_base = dict(tiny_base=False, base_model=str(head_run / "run" / "tiny-base"), max_steps=2)
    again = head_recipe(head_run, output_dir=str(tmp_path / "again"), **same_base)
    assert run_train(["--config", str(again)]).returncode == 0
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == before  # read back, not re-encoded
    shorter = head_recipe(head_run, output_dir=str(tmp_path / "shorter"), max_seq_length=32, **same_base)
    result = run_train(["--config", str(shorter)])
    assert result.returncode == 0, result.stderr[-3000:]
    after = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert len(after) > len(before) and all(after[name] == stamp for name, stamp in before.items())


def test_resume_continues_from_a_head_only_checkpoint(head_run: Path, tmp_path: Path) -> None:
    run_dir = head_run / "run"
    longer = head_recipe(head_run, max_steps=16)
    result = run_train(["--config", str(longer), "--resume_from_checkpoint", str(run_dir / "checkpoint-12")])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["global_step"] == 16 and summary["resumed_from"].endswith("checkpoint-12")


def test_head_only_refuses_backbone_options_before_encoding(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, train_head_only=True, embedding_cache_dir=str(tmp_path / "cache"), freeze_layers=2)
    result = run_train(["--config", str(recipe)])
    assert result.returncode != 0
    assert "train_head_only keeps the whole backbone frozen" in result.stderr and "freeze_layers" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_head_only_refuses_the_cosine_baseline_objective(tmp_path: Path) -> None:
    from ragcun.recipe import parse_recipe
    from ragcun.training import check_before_loading

    recipe = head_recipe(tmp_path, objective="mnrl_gor")
    with pytest.raises(ValueError, match="train_head_only trains ragcun's head with the lejepa objective"):
        check_before_loading(parse_recipe(["--config", str(recipe)]))


def test_a_head_only_run_can_be_rerun_from_its_written_recipe(head_run: Path) -> None:
    from ragcun.recipe import parse_recipe
    from ragcun.training import check_before_loading

    written = head_run / "run" / "recipe.yaml"  # lists every option, the backbone ones at their defaults
    assert "freeze_layers" in written.read_text()
    check_before_loading(parse_recipe(["--config", str(written), "--overwrite_output_dir", "true"]))


def test_scaled_init_needs_the_full_width() -> None:
    from ragcun.model import fit_projection

    x = torch.randn(50, 8)
    weight, bias = fit_projection(x, 8, "scaled")
    assert torch.allclose(weight, weight[0, 0] * torch.eye(8)) and not bias.any()
    with pytest.raises(ValueError, match="output_dim must be the input width 8"):
        fit_projection(x, 4, "scaled")
