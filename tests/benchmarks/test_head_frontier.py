"""benchmarks/head_frontier.py: the post-hoc tempered whitening the trained heads are compared with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("head_frontier", Path(__file__).resolve().parents[2] / "benchmarks" / "head_frontier.py")
head_frontier = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(head_frontier)


def anisotropic(n: int = 4000, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Correlated coordinates with spreads from 0.1 to 3, one coordinate constant (as MiniLM has three)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) * np.linspace(0.1, 3.0, dim)
    data = rng.normal(size=(n, dim)) @ mixing.T + 5.0
    data[:, 0] = 1.5
    return data


def covariance_after(train: np.ndarray, gamma: float, output_dim: int | None) -> np.ndarray:
    weight, bias = head_frontier.tempered_whitening(head_frontier.principal_axes(train), gamma, output_dim)
    out = train @ weight.double().numpy().T + bias.double().numpy()
    assert np.abs(out.mean(axis=0)).max() < 1e-4  # centred (float32 weights)
    return np.cov(out, rowvar=False)


def test_full_whitening_on_the_varying_axes_is_the_identity() -> None:
    train = anisotropic()
    covariance = covariance_after(train, 1.0, output_dim=11)  # the constant coordinate dropped
    np.testing.assert_allclose(covariance, np.eye(11), atol=1e-4)


def test_gamma_tempers_the_spectrum_and_keeps_unit_average_variance() -> None:
    train = anisotropic()
    spreads = {}
    for gamma in (0.0, 0.5, 1.0):
        eigenvalues = np.linalg.eigvalsh(covariance_after(train, gamma, output_dim=11))
        assert eigenvalues.mean() == pytest.approx(1.0, rel=1e-4)
        spreads[gamma] = eigenvalues.max() / eigenvalues.min()
    assert spreads[0.0] > spreads[0.5] > spreads[1.0] == pytest.approx(1.0, rel=1e-3)
    # γ 0 is the base's own geometry up to one scale: distances keep their ratios.
    weight, _ = head_frontier.tempered_whitening(head_frontier.principal_axes(train), 0.0, None)
    a, b, c = train[:3]
    ratio = np.linalg.norm(weight.double().numpy() @ (a - b)) / np.linalg.norm(weight.double().numpy() @ (a - c))
    assert ratio == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a - c), rel=1e-5)


def test_by_role_separates_queries_from_documents_and_finds_the_training_mix_centred() -> None:
    """Queries and documents N(0, I) each, their means apart: centred on the 1:2 mix, off-centre on a 1:1 sample."""
    rng = np.random.default_rng(1)
    gap = np.zeros(8)
    gap[0] = 3.0
    queries = rng.normal(size=(3000, 8)) - 2 * gap / 3
    documents = rng.normal(size=(3000, 8)) + gap / 3
    keys = [f"query: q{i}" for i in range(3000)] + [f"text: d{i}" for i in range(3000)]
    row = head_frontier.by_role(np.concatenate([queries, documents]), keys, "query: ")
    assert (row["n_queries"], row["n_documents"]) == (3000, 3000)
    assert row["mean_gap"] == pytest.approx(3.0, abs=0.1)
    assert row["mean_norm_1q_2d"] < 0.1
    assert row["mean_norm_heldout"] == pytest.approx(0.5, abs=0.1)  # half-way between the two means
    assert row["queries is_isotropic"] == 0.0  # its mean is 2 units off the origin
    assert row["documents variance_min"] > 0.9 and row["documents variance_max"] < 1.1


def test_by_role_needs_a_query_prompt_and_both_roles() -> None:
    embeddings = np.zeros((4, 3))
    with pytest.raises(ValueError, match="no query prompt"):
        head_frontier.by_role(embeddings, ["a", "b", "c", "d"], "")
    with pytest.raises(ValueError, match="both roles"):
        head_frontier.by_role(embeddings, ["q: a", "q: b", "q: c", "q: d"], "q: ")


def test_the_heldout_sample_is_topped_up_with_rows_the_recipe_never_drew(tiny_base_dir: Path, tmp_path: Path) -> None:
    """--heldout-texts: more texts of the same mix, held out by query, none already in the table, encoded by the base
    as training encoded them; the recipe's own sample comes first, unchanged."""
    from sentence_transformers import SentenceTransformer

    from ragcun.training.recipe import parse_recipe
    from ragcun.training.run import prepare_run
    from tests.helpers import head_recipe

    recipe = head_recipe(tmp_path, tiny_base=False, base_model=str(tiny_base_dir))
    _, train, heldout, keys = head_frontier.cached_table(str(recipe), str(tiny_base_dir))
    _, train_again, topped, topped_keys = head_frontier.cached_table(str(recipe), str(tiny_base_dir),
                                                                     heldout_texts=len(keys) + 40)
    assert np.array_equal(train_again, train) and np.array_equal(topped[: len(keys)], heldout)
    assert topped_keys[: len(keys)] == keys and 40 <= len(topped_keys) - len(keys) <= 42  # whole rows, up to 3 texts
    assert len(set(topped_keys)) == len(topped_keys)
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    prepared = prepare_run(parse_recipe(["--config", str(recipe), "--overwrite_output_dir", "true"]))
    anchors = [*prepared.train_dataset["anchor"], *prepared.eval_dataset["anchor"]]
    recipe_queries = {base.prompts["query"] + anchor for anchor in anchors}
    new = topped_keys[len(keys):]
    assert not recipe_queries & set(new) and any(key.startswith(base.prompts["query"]) for key in new)
    query = next(key for key in new if key.startswith(base.prompts["query"]))
    base.max_seq_length = parse_recipe(["--config", str(recipe)]).model.max_seq_length
    expected = base.encode([query.removeprefix(base.prompts["query"])], prompt_name="query")
    assert np.allclose(topped[topped_keys.index(query)], expected[0], atol=1e-5)

    whole_mix = head_recipe(tmp_path / "all", tiny_base=False, base_model=str(tiny_base_dir), max_samples=None)
    with pytest.raises(SystemExit, match="draws every row of its mix"):
        head_frontier.cached_table(str(whole_mix), str(tiny_base_dir), heldout_texts=10_000)
