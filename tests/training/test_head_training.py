"""Head-only training (train_head_only): frozen base encoded once, a Dense head trained on the cached vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sentence_transformers import SentenceTransformer

from ragcun.cached_input import CachedEmbeddings
from tests.helpers import head_recipe, run_train, small_recipe


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("head")
    result = run_train(["--config", str(head_recipe(tmp))])
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.mark.slow
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


@pytest.mark.slow
def test_scaled_head_ranks_like_the_base_at_step_0_and_trains(head_run: Path) -> None:
    summary = json.loads((head_run / "run" / "training_summary.json").read_text())
    assert summary["global_step"] == 12
    # a uniform scale of the base's normalized output: L2 ranks exactly as the base's cosine
    assert summary["isotropy_before"]["heldout_mrr@10"] == pytest.approx(summary["base_metrics"]["heldout_mrr@10"])
    assert 0.7 < summary["isotropy_before"]["heldout_variance_mean"] < 1.3  # from 1/D for the normalized base
    logged = [entry for entry in summary["log_history"] if "contrastive" in entry and "sigreg" in entry]
    assert len(logged) == 12


@pytest.mark.slow
def test_saved_model_encodes_training_texts_as_the_head_saw_them(head_run: Path) -> None:
    """The table was encoded with the prompts training looked texts up with: the saved model agrees with it."""
    from ragcun.encoding.table import key_parts

    table_path = next((head_run / "cache").glob("*.table.npz"))
    lookup = CachedEmbeddings(str(table_path))
    model = SentenceTransformer(str(head_run / "run" / "final"))
    head = model[len(model) - 1]
    query_prompt = model.prompts["query"]
    queries = [text for prompt, text in map(key_parts, lookup.index) if prompt == query_prompt][:4]
    assert len(queries) == 4
    with torch.no_grad():
        rows = lookup(lookup.preprocess(queries, prompt=query_prompt))["sentence_embedding"]
        expected = head({"sentence_embedding": rows.clone()})["sentence_embedding"]
    assert torch.allclose(model.encode(queries, prompt_name="query", convert_to_tensor=True), expected, atol=1e-4)
    with pytest.raises(ValueError, match="1 of 2 texts were not encoded"):
        lookup(lookup.preprocess([queries[0], "unseen"], prompt=query_prompt))


@pytest.mark.slow
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


@pytest.mark.slow
def test_bfloat16_encoding_is_cached_apart_and_the_base_stays_float32(head_run: Path, tmp_path: Path) -> None:
    """encode_precision: the frozen base's bfloat16 embeddings get their own cache entries (never read back as
    float32 ones), stay close to float32's, and the base is back in float32 afterwards (the saved stack encodes as
    released)."""
    from ragcun.training.head import TextGroups, encode_once

    base_dir = str(head_run / "run" / "tiny-base")
    base = SentenceTransformer(base_dir)
    groups = TextGroups(train={"query": ["planets orbit the sun", "why does bread rise"]},
                        heldout={"document": ["yeast makes bread rise", "jazz uses improvisation"]})
    single = encode_once(base, base_dir, groups, tmp_path, batch_size=4)
    half = encode_once(base, base_dir, groups, tmp_path, batch_size=4, precision="bfloat16")
    assert half.table_path != single.table_path
    assert len(list(tmp_path.glob("*.table.npz"))) == 2
    full, reduced = (encoded.read()[0] for encoded in (single, half))
    assert not np.array_equal(full, reduced)  # really encoded in bfloat16
    cosines = (full * reduced).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(reduced, axis=1)
    assert cosines.min() > 0.99
    assert "forward" not in vars(base[0])  # the autocast wrapper is gone
    assert np.allclose(base.encode(["planets orbit the sun"], prompt_name="query"), full[:1], atol=1e-5)


@pytest.mark.slow
def test_resume_continues_from_a_head_only_checkpoint(head_run: Path, tmp_path: Path) -> None:
    """The checkpoint names its lookup module by the path every ragcun version wrote (resuming finds the class by
    that name, so moving it would strand earlier checkpoints)."""
    run_dir = head_run / "run"
    modules = json.loads((run_dir / "checkpoint-12" / "modules.json").read_text())
    assert modules[0]["type"] == "ragcun.cached_input.CachedEmbeddings"
    longer = head_recipe(head_run, max_steps=16)
    result = run_train(["--config", str(longer), "--resume_from_checkpoint", str(run_dir / "checkpoint-12")])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["global_step"] == 16 and summary["resumed_from"].endswith("checkpoint-12")


@pytest.mark.slow
def test_head_only_refuses_backbone_options_before_encoding(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, train_head_only=True, embedding_cache_dir=str(tmp_path / "cache"), freeze_layers=2)
    result = run_train(["--config", str(recipe)])
    assert result.returncode != 0
    assert "train_head_only keeps the whole backbone frozen" in result.stderr and "freeze_layers" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_head_only_refuses_the_cosine_baseline_objective(tmp_path: Path) -> None:
    from ragcun.training.recipe import parse_recipe
    from ragcun.training.run import check_before_loading

    recipe = head_recipe(tmp_path, objective="mnrl_gor")
    with pytest.raises(ValueError, match="train_head_only trains ragcun's head with the lejepa objective"):
        check_before_loading(parse_recipe(["--config", str(recipe)]))


@pytest.mark.slow
def test_a_head_only_run_can_be_rerun_from_its_written_recipe(head_run: Path) -> None:
    from ragcun.training.recipe import parse_recipe
    from ragcun.training.run import check_before_loading

    written = head_run / "run" / "recipe.yaml"  # lists every option, the backbone ones at their defaults
    assert "freeze_layers" in written.read_text()
    check_before_loading(parse_recipe(["--config", str(written), "--overwrite_output_dir", "true"]))


def test_scaled_init_needs_the_full_width() -> None:
    from ragcun.model import fit_projection

    x = torch.randn(50, 8)
    weight, bias = fit_projection(x, 8, "scaled")
    assert torch.allclose(weight, weight[0, 0] * torch.eye(8)) and not bias.any()
    # narrower: the top principal axes, one scale; a direction that never varies is the one dropped
    x[:, 7] = 0.3
    weight, bias = fit_projection(x, 7, "scaled")
    y = x @ weight.T + bias
    assert abs(float(y.var(dim=0, unbiased=True).mean()) - 1) < 1e-4 and y.mean(dim=0).abs().max() < 1e-5
    scale = float(weight.norm(dim=1).mean())
    assert torch.allclose(torch.cdist(y, y), scale * torch.cdist(x, x), rtol=1e-3, atol=1e-2)  # distances kept, up to scale
    with pytest.raises(ValueError, match="needs more than 7 texts"):
        fit_projection(x[:5], 7, "scaled")


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Triplets mixed with pairs (negatives mined), a two-layer head and the anchor, end to end."""
    from tests.helpers import TRIPLETS

    tmp = tmp_path_factory.mktemp("deep")
    rows = [json.loads(line) for line in TRIPLETS.read_text().splitlines()]
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": r["query"] + " ?", "pos": r["pos"]}) + "\n" for r in rows[:120]))
    recipe = head_recipe(tmp, train_data=[str(TRIPLETS), str(pairs)], max_samples=None, mine_hard_negatives=1,
                         mine_relative_margin=None, head_layers=2, lambda_anchor=0.5, isotropy_by_role=True)
    result = run_train(["--config", str(recipe)])
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_deep_head_with_the_anchor_and_mined_negatives(deep_run: Path) -> None:
    summary = json.loads((deep_run / "run" / "training_summary.json").read_text())
    logged = [entry for entry in summary["log_history"] if "anchor" in entry]
    assert len(logged) == 12  # logged as its own part, every step
    # the near-linear init ranks (almost) as the base: the anchor starts near 0 and training moves it
    assert logged[0]["anchor"] < 0.05 and max(entry["anchor"] for entry in logged) > logged[0]["anchor"]
    # the near-linear init: step 0 ranks (almost) as the base does, the cloud at unit average variance
    assert summary["isotropy_before"]["heldout_mrr@10"] == pytest.approx(summary["base_metrics"]["heldout_mrr@10"],
                                                                         abs=0.02)
    # every row kept its own negative or got a mined one (the tiny random base's cosines are all close: no margin)
    assert summary["num_train_rows"] == 320 + 120 - 32
    model = SentenceTransformer(str(deep_run / "run" / "final"))
    base = SentenceTransformer(str(deep_run / "run" / "tiny-base"))
    head = list(model)[len(base):]
    assert [type(m.activation_function).__name__ for m in head] == ["Tanh", "Identity"]
    assert model.encode(["planets orbit the sun"]).shape == (1, 32)
    assert "isotropy_by_role: true" in (deep_run / "run" / "recipe.yaml").read_text()  # the run's recorded recipe


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(lambda_anchor=0.5), "lambda_anchor keeps the frozen base's ranking and needs train_head_only"),
    (dict(head_layers=2), "head_layers > 1 is a head-only option"),
    (dict(mine_hard_negatives=-1), "mine_hard_negatives must be >= 0"),
    (dict(encode_precision="bfloat16"), "encode_precision is an option of the cached runs"),
    (dict(encode_precision="bf16"), "encode_precision must be one of float32, bfloat16, auto"),
])
def test_head_options_are_refused_outside_head_only(tmp_path: Path, overrides: dict, message: str) -> None:
    from ragcun.training.recipe import parse_recipe
    from ragcun.training.run import check_before_loading

    recipe = small_recipe(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        check_before_loading(parse_recipe(["--config", str(recipe)]))


def test_deep_head_starts_near_the_one_layer_head() -> None:
    from ragcun.training.head import build_head

    x = torch.nn.functional.normalize(torch.randn(300, 24, generator=torch.Generator().manual_seed(0)), dim=-1)

    def apply(layers: list) -> torch.Tensor:
        features = {"sentence_embedding": x.clone()}
        with torch.no_grad():
            for layer in layers:
                features = layer(features)
        return features["sentence_embedding"]

    linear = apply(build_head(x.numpy(), 24, "scaled", seed=0, samples=1000, layers=1))
    deep_layers = build_head(x.numpy(), 24, "scaled", seed=0, samples=1000, layers=3)
    assert [type(m.activation_function).__name__ for m in deep_layers] == ["Tanh", "Tanh", "Identity"]
    deep = apply(deep_layers)
    assert (deep - linear).norm() / linear.norm() < 0.15  # tanh kept in its near-linear range
    distances = torch.cdist(linear[:20], linear), torch.cdist(deep[:20], deep)
    nearest = [d.argsort(dim=1)[:, 1:6] for d in distances]
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(*nearest)]
    assert sum(overlap) / len(overlap) > 0.8  # each point's 5 nearest neighbours mostly unchanged
    with pytest.raises(ValueError, match="head_layers must be a positive integer"):
        build_head(x.numpy(), 24, "scaled", seed=0, samples=1000, layers=0)


@pytest.mark.slow
def test_heads_evaluate_on_a_memoized_base(head_run: Path, tmp_path: Path) -> None:
    """evaluate.py --frozen-base: a head's figures through the memoized base equal the full stack's, and the base
    encodes each text once (kept on disk for the next run); a model whose backbone differs is left alone."""
    import copy

    from ragcun.encoding.memoized_base import MemoizedBase, memo_path
    from ragcun.evaluation.reports import with_memoized_base

    base_dir = head_run / "run" / "tiny-base"
    base = SentenceTransformer(str(base_dir))
    model = SentenceTransformer(str(head_run / "run" / "final"))
    calls: list[list[str]] = []
    encode = base.encode
    base.encode = lambda texts, **kwargs: calls.append(list(texts)) or encode(texts, **kwargs)  # type: ignore[method-assign]
    path = memo_path(str(base_dir), base, tmp_path, "float32")
    stack = with_memoized_base(model, MemoizedBase(base, path))
    assert isinstance(stack[0], MemoizedBase)
    texts = ["planets orbit the sun", "bread needs yeast to rise", "jazz uses improvisation"]
    for prompt in ("query", "document"):
        assert torch.allclose(stack.encode(texts, prompt_name=prompt, convert_to_tensor=True),
                              model.encode(texts, prompt_name=prompt, convert_to_tensor=True), atol=1e-5)
    stack.encode(texts[:2], prompt_name="query")
    assert len(calls) == 2  # once per prompt, never again
    stack[0].save_memo()
    calls.clear()
    reloaded = with_memoized_base(model, MemoizedBase(base, path))
    reloaded.encode(texts, prompt_name="document")
    assert calls == []  # read back from disk
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed[0].parameters()).add_(0.01)  # a fine-tuned backbone is not this frozen base
    assert with_memoized_base(changed, MemoizedBase(base)) is changed
    itself = with_memoized_base(base, MemoizedBase(base))  # the base itself: an empty head, its own similarity
    assert len(itself) == 1 and itself.similarity_fn_name == base.similarity_fn_name
    assert torch.allclose(itself.encode(texts, prompt_name="query", convert_to_tensor=True),
                          encode(texts, prompt_name="query", convert_to_tensor=True), atol=1e-5)


@pytest.mark.slow
def test_the_memo_saves_itself_as_it_grows_and_reads_the_older_format(head_run: Path, tmp_path: Path) -> None:
    """A killed evaluation keeps what the base encoded: the memo is written every ``save_every`` new texts (keys as
    compact JSON); memos written with a fixed-width key array still load."""
    from ragcun.encoding.memoized_base import MemoizedBase

    base = SentenceTransformer(str(head_run / "run" / "tiny-base"))
    path = tmp_path / "base.memo.npz"
    memo = MemoizedBase(base, path, save_every=2)
    stack = SentenceTransformer(modules=[memo], device="cpu")
    texts = ["planets orbit the sun", "bread needs yeast to rise", "jazz uses improvisation"]
    stack.encode(texts, batch_size=3)  # no save_memo(): three new texts passed save_every
    with np.load(path, allow_pickle=False) as saved:
        assert set(saved.files) == {"table", "keys_json"} and saved["table"].shape[0] == 3
    assert MemoizedBase(base, path).keys == memo.keys
    old = tmp_path / "old.memo.npz"
    np.savez(old, table=memo.table.numpy(), keys=np.array(memo.keys))  # the format before keys_json
    reread = MemoizedBase(base, old)
    assert reread.keys == memo.keys and torch.equal(reread.table, memo.table)


@pytest.mark.slow
def test_the_cache_defaults_to_the_users_cache_folder(tmp_path: Path, monkeypatch) -> None:
    """Recipes do not name embedding_cache_dir: the head's embeddings go to ~/.cache/ragcun/embeddings."""
    recipe_path = head_recipe(tmp_path, max_steps=2)
    recipe = yaml.safe_load(recipe_path.read_text())
    del recipe["embedding_cache_dir"]
    recipe_path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the training subprocess's Path.home()
    result = run_train(["--config", str(recipe_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "home" / ".cache" / "ragcun" / "embeddings").glob("*.npy"))


def test_isotropic_head_starts_as_full_whitening_and_the_retraction_keeps_it_gaussian() -> None:
    """The head maps its training embeddings to identity covariance at step 0 (ranking as γ 1 on the top axes), and
    after any update once OrthonormalRows has retracted it: only the choice of whitened directions can change."""
    from ragcun.training.head import OrthonormalRows, build_isotropic_head
    from ragcun.whitening import principal_axes, tempered_whitening

    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 12)) @ (rng.normal(size=(12, 12)) * np.linspace(0.1, 3.0, 12)) + 2.0
    whitening, choice = build_isotropic_head(train, 5)
    assert not any(p.requires_grad for p in whitening.parameters()) and choice.linear.bias is None

    def head_output() -> np.ndarray:
        with torch.no_grad():
            return choice({"sentence_embedding": whitening({"sentence_embedding": torch.from_numpy(train).float()})[
                "sentence_embedding"]})["sentence_embedding"].double().numpy()

    assert np.abs(np.cov(head_output(), rowvar=False) - np.eye(5)).max() < 1e-3
    weight, bias = tempered_whitening(principal_axes(train), 1.0, 5)
    reference = train @ weight.double().numpy().T + bias.double().numpy()

    def distances(points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points[:200, None] - points[None, :200], axis=-1)

    assert np.allclose(distances(head_output()), distances(reference), atol=1e-3)  # the same axes: ranks as γ 1
    with torch.no_grad():
        choice.linear.weight.add_(0.3 * torch.randn(5, 12, generator=torch.Generator().manual_seed(1)))
    OrthonormalRows(choice).on_step_end(None, None, None)
    rows = choice.linear.weight.detach().double()
    assert torch.allclose(rows @ rows.T, torch.eye(5, dtype=torch.float64), atol=1e-5)
    assert np.abs(np.cov(head_output(), rowvar=False) - np.eye(5)).max() < 1e-3
    assert not np.allclose(distances(head_output()), distances(reference), atol=1e-2)  # other directions now


@pytest.mark.slow
def test_an_isotropic_head_trains_and_saves_as_plain_dense_layers(head_run: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Dense

    same_base = dict(tiny_base=False, base_model=str(head_run / "run" / "tiny-base"))
    recipe = head_recipe(head_run, output_dir=str(tmp_path / "run"), isotropic_head=True, output_dim=16,
                         lambda_isotropy=0.0, learning_rate=5e-2, **same_base)
    result = run_train(["--config", str(recipe)])
    assert result.returncode == 0, result.stderr[-3000:]
    model = SentenceTransformer(str(tmp_path / "run" / "final"), device="cpu")
    whitening, choice = model[-2], model[-1]
    assert isinstance(whitening, Dense) and isinstance(choice, Dense) and choice.linear.bias is None
    assert whitening.linear.weight.shape == (32, 32) and choice.linear.weight.shape == (16, 32)
    rows = choice.linear.weight.detach().double()
    assert torch.allclose(rows @ rows.T, torch.eye(16, dtype=torch.float64), atol=1e-5)  # retracted after the last step
    losses = [entry["contrastive"] for entry in json.loads((tmp_path / "run" / "training_summary.json").read_text())[
        "log_history"] if "contrastive" in entry]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(isotropic_head=True, head_layers=2), "leave head_layers at 1"),
])
def test_isotropic_head_refuses_a_deep_head(tmp_path: Path, overrides: dict, message: str) -> None:
    from ragcun.training.recipe import parse_recipe

    with pytest.raises(ValueError, match=message):
        parse_recipe(["--config", str(head_recipe(tmp_path, **overrides))])
