"""Top-layer training (train_top_layers): cached layer states, the top k layers trained, whitened inside the loss."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from ragcun.encoding.layer_states import cache_layer_states, check_top_layers, read_groups
from ragcun.losses import LeJEPALoss
from ragcun.losses.batch_whitening import BatchWhitening
from ragcun.tiny_model import _train_tokenizer
from ragcun.top_layers import CachedLayerStates
from tests.helpers import run_train, small_recipe, tiny_texts


def _long_text() -> str:
    """Past the tiny Gemma's sliding window (64 tokens): its local and global layers mask differently."""
    return " ".join(tiny_texts()[1][:40])


def _texts() -> list[str]:
    queries, passages = tiny_texts()
    return queries[:6] + passages[:6] + [_long_text()]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (absolute position embeddings, an embedding LayerNorm): the other layout the top is cut from."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert")
    queries, passages = tiny_texts()
    tokenizer = _train_tokenizer(queries + passages, 2000)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    model = SentenceTransformer(modules=[Transformer(str(folder / "bert"), max_seq_length=128), Pooling(32, "mean")],
                                device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def _cached_model(base: SentenceTransformer, base_dir: Path, texts: list[str], prompt_name: str | None, k: int,
                  cache: Path, precision: str = "float32") -> SentenceTransformer:
    key_file = cache_layer_states(base, str(base_dir), texts, prompt_name, k, cache, precision, batch_size=4)
    cached = CachedLayerStates(str(base_dir), k, [str(key_file)], encoder=base[0].model)
    return SentenceTransformer(modules=[cached, *list(base)[1:]], prompts=dict(base.prompts), device="cpu")


@pytest.mark.parametrize("k", [1, 2])
def test_the_cached_top_encodes_as_the_full_gemma_at_step_0(tiny_base_dir: Path, tmp_path: Path, k: int) -> None:
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    texts = _texts()
    model = _cached_model(base, tiny_base_dir, texts, "query", k, tmp_path)
    expected = base.encode(texts, prompt_name="query", convert_to_tensor=True)
    assert torch.allclose(model.encode(texts, prompt_name="query", convert_to_tensor=True), expected, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_the_cached_top_encodes_as_the_full_bert_at_step_0(tiny_bert_dir: Path, tmp_path: Path, k: int) -> None:
    base = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    texts = _texts()
    model = _cached_model(base, tiny_bert_dir, texts, None, k, tmp_path)
    assert torch.allclose(model.encode(texts, convert_to_tensor=True), base.encode(texts, convert_to_tensor=True),
                          atol=1e-5)


def test_bfloat16_states_encode_within_bfloat16_tolerance(tiny_base_dir: Path, tmp_path: Path) -> None:
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    texts = _texts()
    model = _cached_model(base, tiny_base_dir, texts, "document", 2, tmp_path, precision="bfloat16")
    assert model[0].states.states.dtype == torch.bfloat16
    got = model.encode(texts, prompt_name="document", convert_to_tensor=True)
    expected = base.encode(texts, prompt_name="document", convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min() > 0.999 and not torch.equal(got, expected)  # rounded to bfloat16, and only that


def test_training_the_cached_top_trains_the_full_encoder_in_place(tiny_base_dir: Path, tmp_path: Path) -> None:
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    texts = _texts()
    model = _cached_model(base, tiny_base_dir, texts, "query", 1, tmp_path)
    bottom = [p.detach().clone() for p in base[0].model.layers[0].parameters()]
    with torch.no_grad():
        model[0].top.layers[-1].mlp.down_proj.weight.mul_(1.5)
    after = base.encode(texts, prompt_name="query", convert_to_tensor=True)
    assert torch.allclose(model.encode(texts, prompt_name="query", convert_to_tensor=True), after, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(bottom, base[0].model.layers[0].parameters()))
    # only the top's layers are its parameters: the token table and the bottom layers are not trained or saved
    names = [name for name, _ in model[0].named_parameters()]
    assert names and all(name.startswith(("top.layers.0.", "top.norm.")) for name in names)


def test_the_cache_is_keyed_by_model_k_and_length_and_resumes_by_shard(tiny_base_dir: Path, tiny_bert_dir: Path,
                                                                      tmp_path: Path, capsys) -> None:
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    texts = _texts()
    first = cache_layer_states(base, str(tiny_base_dir), texts, "query", 2, tmp_path, shard_size=5)
    assert capsys.readouterr().out.count("layer states: shard") == 3
    assert cache_layer_states(base, str(tiny_base_dir), texts, "query", 2, tmp_path, shard_size=5) == first
    assert "layer states" not in capsys.readouterr().out  # reused, nothing recomputed
    other_k = cache_layer_states(base, str(tiny_base_dir), texts, "query", 1, tmp_path, shard_size=5)
    base.max_seq_length = 32
    other_length = cache_layer_states(base, str(tiny_base_dir), texts, "query", 2, tmp_path, shard_size=5)
    bert = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    other_model = cache_layer_states(bert, str(tiny_bert_dir), texts, "query", 2, tmp_path, shard_size=5)
    assert len({first, other_k, other_length, other_model}) == 4
    # a kill mid-run leaves finished shards: only the missing one is computed again, and the states are the same
    states, keys = read_groups([str(first)])
    shard = Path(str(first).replace(".states-keys.json", ".states-1.npz"))
    shard.unlink()
    base.max_seq_length = 128
    capsys.readouterr()
    assert cache_layer_states(base, str(tiny_base_dir), texts, "query", 2, tmp_path, shard_size=5) == first
    assert re.findall(r"shard (\d)/3", capsys.readouterr().out) == ["2"]
    again, again_keys = read_groups([str(first)])
    assert again_keys == keys and torch.equal(again.states, states.states)
    # a damaged shard is refused with the fix
    np.savez(shard, states=np.zeros((3, 32), np.float32), offsets=np.arange(4),
             embeddings=np.zeros((3, 64), np.float32), dtype=np.array("float32"))
    with pytest.raises(ValueError, match="damaged; delete the file"):
        read_groups([str(first)])


def test_k_above_the_depth_is_refused_with_the_fix(tiny_base_dir: Path) -> None:
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    with pytest.raises(ValueError, match="has 2 layers: choose k from 1 to 2"):
        check_top_layers(base[0].model, 3)
    with pytest.raises(ValueError, match="choose k from 1 to 2"):
        check_top_layers(base[0].model, 0)


def test_batch_whitening_whitens_with_gradients_and_refuses_a_small_batch_alone() -> None:
    torch.manual_seed(0)
    mixing = torch.randn(8, 8)
    x = (torch.randn(400, 8) @ mixing + 3.0).requires_grad_(True)
    whitening = BatchWhitening(8, memory_rows=0, ridge=0.0)
    out = whitening(x)
    centred = out - out.mean(0)
    assert torch.allclose(centred.T @ centred / (len(out) - 1), torch.eye(8), atol=1e-4)
    out.pow(3).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="more rows than its width 8"):
        whitening(torch.randn(8, 8))
    # with a running estimate a batch smaller than the width is whitened, and the estimate moves toward the batches
    remembering = BatchWhitening(8)
    before = remembering.running_covariance.clone()
    remembering(torch.randn(4, 8) * 5)
    assert not torch.equal(before, remembering.running_covariance)
    with torch.no_grad():  # an evaluation of the loss does not move the estimate
        moved = remembering.running_covariance.clone()
        remembering(torch.randn(4, 8) * 5)
    assert torch.equal(moved, remembering.running_covariance)


def test_the_loss_whitens_every_column_together() -> None:
    torch.manual_seed(0)
    queries, documents = torch.randn(64, 4) * 3, torch.randn(64, 4) * 3 + 1

    class Fixed(torch.nn.Module):
        def forward(self, features):
            return {"sentence_embedding": features["x"]}

    whitening = BatchWhitening(4, memory_rows=0, ridge=0.0)
    loss = LeJEPALoss(Fixed(), lambda_isotropy=0.0, whitening=whitening)
    seen: list[torch.Tensor] = []
    loss.compute_loss_from_embeddings = lambda embeddings, labels=None: seen.extend(embeddings) or {}
    loss([{"x": queries}, {"x": documents}])
    joined = torch.cat(seen)
    centred = joined - joined.mean(0)
    assert torch.allclose(centred.T @ centred / (len(joined) - 1), torch.eye(4), atol=1e-4)
    assert not torch.allclose(seen[0].mean(0), seen[1].mean(0), atol=0.1)  # one map: the roles keep their offset


# ---------------------------------------------------------------- train.py runs
def _top_recipe(tmp_path: Path, **overrides) -> Path:
    settings = dict(train_top_layers=1, embedding_cache_dir=str(tmp_path / "cache"), output_dim=16,
                    per_device_train_batch_size=32, learning_rate=1e-3, lambda_anchor=1.0, max_steps=12)
    return small_recipe(tmp_path, drop=("freeze_layers", "init"), **{**settings, **overrides})


@pytest.fixture(scope="module")
def top_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("top")
    result = run_train(["--config", str(_top_recipe(tmp))])
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_the_saved_model_is_the_base_with_its_top_layers_trained_and_whitened(top_run: Path) -> None:
    final = top_run / "run" / "final"
    assert "ragcun" not in (final / "modules.json").read_text()  # plain sentence-transformers modules only
    model = SentenceTransformer(str(final))
    base = SentenceTransformer(str(top_run / "run" / "tiny-base"))
    assert model.similarity_fn_name == "euclidean" and model.prompts == base.prompts
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in base] + ["Dense"]
    trained, frozen = model[0].auto_model.layers, base[0].auto_model.layers
    assert all(torch.equal(p, q) for p, q in zip(trained[0].parameters(), frozen[0].parameters()))  # bottom frozen
    assert not all(torch.equal(p, q) for p, q in zip(trained[-1].parameters(), frozen[-1].parameters()))
    assert model.encode(["a question"], prompt_name="query").shape == (1, 16)
    # the held-out figures are read through the final whitening, not from the projection the loss whitened
    summary = json.loads((top_run / "run" / "training_summary.json").read_text())
    assert summary["num_train_rows"] == 128 and summary["global_step"] == 12
    assert summary["isotropy_after"]["heldout_variance_mean"] == pytest.approx(1.0, abs=0.3)
    assert summary["isotropy_before"]["heldout_variance_mean"] < 0.5
    # the comparison it must beat, saved beside it: the base as released, whitened after the fact on the same texts
    comparison = top_run / "run" / "whitened-base"
    whitened = SentenceTransformer(str(comparison))
    assert [type(m).__name__ for m in whitened] == [type(m).__name__ for m in base] + ["Dense"]
    assert all(torch.equal(p, q) for p, q in zip(whitened[0].auto_model.parameters(), base[0].auto_model.parameters()))
    figures = json.loads((comparison / "heldout_metrics.json").read_text())
    assert figures["heldout_variance_mean"] == pytest.approx(1.0, abs=0.3)


@pytest.mark.slow
def test_the_saved_model_encodes_as_the_trained_cached_view(top_run: Path, tmp_path: Path) -> None:
    """What the held-out figures were read from (the cached top plus the final whitening) is what the saved model
    computes from the tokens."""
    from ragcun.training import top

    final = SentenceTransformer(str(top_run / "run" / "final"))
    checkpoint = top_run / "run" / "checkpoint-12"
    # loaded as the trainer resumes it: the checkpoint's own module classes handed over, no remote code
    trained = SentenceTransformer._load_with_module_classes(
        str(checkpoint), {"ragcun.top_layers.CachedLayerStates": CachedLayerStates}, trust_remote_code=False)
    assert json.loads((checkpoint / "modules.json").read_text())[0]["type"] == "ragcun.top_layers.CachedLayerStates"
    view = top.cached_view(trained, final[-1])
    texts = list(trained[0].index)[:20]
    prompt_text = [json.loads(key) for key in texts]
    for prompt_name, prompt in final.prompts.items():
        group = [text for p, text in prompt_text if p == prompt]
        if group:
            assert np.allclose(view.encode(group, prompt_name=prompt_name),
                               final.encode(group, prompt_name=prompt_name), atol=1e-4)


@pytest.mark.slow
def test_a_top_layer_run_resumes_from_its_checkpoint(top_run: Path) -> None:
    run_dir = top_run / "run"
    longer = _top_recipe(top_run, max_steps=16)
    result = run_train(["--config", str(longer), "--resume_from_checkpoint", str(run_dir / "checkpoint-12")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layer states: shard" not in result.stdout  # the states were reused
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["global_step"] == 16 and summary["resumed_from"].endswith("checkpoint-12")


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), [
    (dict(train_top_layers=9), "has 2 layers: choose k from 1 to 2"),
    (dict(train_head_only=True), "set one of them"),
    (dict(output_dim=600), "these are 32-d. Lower the output width to at most 32"),
    (dict(objective="mnrl_gor"), "lejepa objective"),
    (dict(freeze_embeddings=True), "also sets freeze_embeddings"),
])
def test_top_layer_runs_refuse_bad_input_with_the_fix(tmp_path: Path, overrides: dict, message: str) -> None:
    result = run_train(["--config", str(_top_recipe(tmp_path, **overrides))])
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_whiten_in_loss_is_refused_without_top_layers(tmp_path: Path) -> None:
    from ragcun.training.recipe import parse_recipe
    from ragcun.training.run import check_before_loading

    recipe = parse_recipe(["--config", str(small_recipe(tmp_path, whiten_in_loss=False))])
    with pytest.raises(ValueError, match="whiten_in_loss applies to train_top_layers runs only"):
        check_before_loading(recipe)


@pytest.mark.slow
def test_two_processes_train_the_top_layers_from_one_cache(tmp_path: Path) -> None:
    """Under accelerate (2 CPU processes, gloo): the main process caches the states, the other reads them, and both
    train the shared top layers to one saved model."""
    from tests.training.test_training import _train_with_two_processes

    recipe = _top_recipe(tmp_path, max_steps=4, eval_strategy="no", save_strategy="no", eval_size=0,
                         per_device_train_batch_size=16, max_samples=None)
    result = _train_with_two_processes(recipe)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    computed = re.findall(r"layer states: shard (\d+)/(\d+) \((\d+) texts\)", result.stdout + result.stderr)
    assert computed and len(computed) == len(set(computed))  # every shard computed once, by one process
    assert SentenceTransformer(str(tmp_path / "run" / "final")).encode(["a question"]).shape == (1, 16)


def test_a_text_in_two_groups_keeps_a_row_and_a_key_in_each(tiny_base_dir: Path, tmp_path: Path) -> None:
    """A text both trained on and held out is cached in both groups: rows and keys stay one for one (the base's
    lookup table is written from them)."""
    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    texts = _texts()
    first = cache_layer_states(base, str(tiny_base_dir), texts[:8], "query", 1, tmp_path)
    second = cache_layer_states(base, str(tiny_base_dir), texts[5:], "query", 1, tmp_path)
    cached = CachedLayerStates(str(tiny_base_dir), 1, [str(first), str(second)], encoder=base[0].model)
    assert len(cached.keys) == len(cached.states) == len(texts) + 3
    assert len(cached.index) == len(texts)


def test_the_final_whitening_can_be_fitted_on_a_sample_of_both_roles() -> None:
    from ragcun.training.head import TextGroups
    from ragcun.training.top import trained_embeddings

    class Recorder:
        def __init__(self) -> None:
            self.seen: dict[str | None, int] = {}

        def eval(self) -> None:
            pass

        def encode(self, texts, prompt_name=None, **kwargs) -> np.ndarray:
            self.seen[prompt_name] = self.seen.get(prompt_name, 0) + len(texts)
            return np.zeros((len(texts), 3))

    groups = TextGroups(train={"query": [f"q{i}" for i in range(300)], "document": [f"d{i}" for i in range(700)]},
                        heldout={"query": ["held out"]})
    everything = Recorder()
    assert trained_embeddings(everything, groups, 8).shape == (1000, 3)
    assert everything.seen == {"query": 300, "document": 700}  # every training text, no held-out one
    sample = Recorder()
    assert trained_embeddings(sample, groups, 8, limit=200).shape == (200, 3)
    assert 30 < sample.seen["query"] < 90 and sample.seen["query"] + sample.seen["document"] == 200
