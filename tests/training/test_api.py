"""ragcun.train / ragcun.train_head: the command line's training from Python, in this process; and which way each
held-out figure makes a checkpoint the best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sentence_transformers import SentenceTransformer

import ragcun
from ragcun.training.monitor import greater_is_better
from ragcun.training.recipe import parse_recipe
from ragcun.training.run import training_mode
from tests.helpers import TINY, head_recipe, small_recipe


def test_train_head_from_a_recipe_and_keywords_saves_a_plain_head_model(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, drop=("freeze_layers", "init"), embedding_cache_dir=str(tmp_path / "cache"),
                          output_dim=32, per_device_train_batch_size=64, learning_rate=1e-3)
    summary = ragcun.train_head(recipe, max_steps=4, eval_steps=2, save_steps=4, output_dir=str(tmp_path / "out"))
    assert summary["global_step"] == 4
    written = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    # keywords override the file; train_head's defaults fill what neither gives
    assert written["max_steps"] == 4 and written["train_head_only"] is True and written["init"] == "scaled"
    model = SentenceTransformer(str(tmp_path / "out" / "final"))
    assert model.similarity_fn_name == "euclidean" and model.get_embedding_dimension() == 32
    # step 0 of the scaled head ranks exactly as the base does
    assert summary["isotropy_before"]["heldout_mrr@10"] == pytest.approx(summary["base_metrics"]["heldout_mrr@10"])


def test_train_head_defaults_are_the_recommended_method_where_the_recipe_is_silent(tmp_path: Path) -> None:
    from ragcun.training.api import HEAD_DEFAULTS, head_options

    alone = head_options(None, {"train_data": ["pairs.jsonl"]})
    assert alone == {**HEAD_DEFAULTS, "train_data": ["pairs.jsonl"]}
    assert alone["lambda_isotropy"] == 0.1 and alone["init"] == "scaled" and alone["num_principal"] == 0
    recipe = small_recipe(tmp_path, learning_rate=1e-3)  # the recipe's word, then the keywords', win
    merged = head_options(recipe, {"lambda_isotropy": 0.3})
    assert merged["lambda_isotropy"] == 0.3 and "learning_rate" not in merged and merged["train_head_only"] is True


def test_train_head_refuses_a_backbone_recipe_and_unknown_keywords(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="call ragcun.train to fine-tune the backbone"):
        ragcun.train_head(small_recipe(tmp_path, train_head_only=False))
    with pytest.raises(ValueError, match="Unknown option --lerning_rate.*learning_rate"):
        ragcun.train_head(head_recipe(tmp_path), lerning_rate=1e-3)


def test_best_checkpoint_by_sigreg_keeps_the_lowest(tmp_path: Path) -> None:
    """transformers would take the highest: only names ending in "loss" count as lower-is-better there."""
    recipe = head_recipe(tmp_path, learning_rate=5e-2, lambda_isotropy=1.0, eval_steps=1, save_steps=1,
                         metric_for_best_model="eval_heldout_sigreg", load_best_model_at_end=False)
    summary = ragcun.train(recipe, max_steps=6)
    logged = [entry["eval_heldout_sigreg"] for entry in summary["log_history"] if "eval_heldout_sigreg" in entry]
    assert len(set(logged)) > 1  # the figure moved, so highest and lowest differ
    assert summary["best_metric"] == pytest.approx(min(logged))
    state = json.loads((Path(summary["best_checkpoint"]) / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(min(logged))


@pytest.mark.parametrize("metric, expected", [
    ("eval_heldout_sigreg", False), ("heldout_cov_floor_ratio", False), ("eval_heldout_mean_norm_excess", False),
    ("eval_heldout_offdiag_corr_excess", False), ("eval_heldout_mrr@10", True), ("eval_heldout_is_isotropic", True),
    ("eval_loss", False), ("eval_something_else", True),
])
def test_each_figure_says_which_way_is_better(metric: str, expected: bool) -> None:
    assert greater_is_better(metric) is expected
    recipe = parse_recipe(["--config", str(TINY), "--metric_for_best_model", metric])
    assert recipe.training.greater_is_better is expected


def test_a_figure_best_at_a_target_is_refused_unless_the_direction_is_given() -> None:
    with pytest.raises(ValueError, match="best at a target value.*set greater_is_better yourself"):
        parse_recipe(["--config", str(TINY), "--metric_for_best_model", "eval_heldout_variance_mean"])
    recipe = parse_recipe(["--config", str(TINY), "--metric_for_best_model", "eval_heldout_sigreg",
                           "--greater_is_better", "true"])
    assert recipe.training.greater_is_better is True  # the recipe's word wins


def test_one_entry_picks_one_mode_per_recipe(tmp_path: Path) -> None:
    assert training_mode(parse_recipe(["--config", str(TINY)])) == "backbone"
    assert training_mode(parse_recipe(["--config", str(TINY), "--objective", "mnrl_gor"])) == "cosine_baseline"
    assert training_mode(parse_recipe(["--config", str(head_recipe(tmp_path))])) == "head_only"
