import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Transformer
from torch import nn

from ragcun import build_model, fit_projection
from tests.helpers import tiny_texts


def init_texts() -> dict[str, list[str]]:
    queries, passages = tiny_texts()
    return {"query": queries, "document": passages}


@pytest.fixture(scope="module")
def model(tiny_base_dir):
    return build_model(str(tiny_base_dir), output_dim=16, init="whiten", init_texts=init_texts(), freeze_layers=1)


def test_stack_keeps_base_dense_drops_normalize(model, tiny_base_dir) -> None:
    base = SentenceTransformer(str(tiny_base_dir))
    assert any(isinstance(m, Normalize) for m in base)
    assert not any(isinstance(m, Normalize) for m in model)
    denses = [m for m in model if isinstance(m, Dense)]
    assert [(d.in_features, d.out_features) for d in denses] == [(32, 128), (128, 32), (32, 16)]
    assert isinstance(denses[-1].activation_function, nn.Identity)
    for kept, original in zip(denses[:2], [m for m in base if isinstance(m, Dense)]):
        assert torch.equal(kept.linear.weight, original.linear.weight)  # pretrained weights kept
    assert model.similarity_fn_name == "euclidean"
    assert model.get_embedding_dimension() == 16


def test_prompts_are_kept_and_used(model) -> None:
    assert model.prompts["query"] == "task: search result | query: "
    assert model.prompts["document"] == "title: none | text: "
    text = ["planets orbit the sun"]
    assert not np.allclose(model.encode_query(text), model.encode_document(text))


def test_whiten_init_gives_n01_on_its_fitting_sample(model) -> None:
    texts = init_texts()
    embeddings = np.concatenate([model.encode_query(texts["query"]), model.encode_document(texts["document"])])
    assert np.abs(embeddings.mean(0)).max() < 1e-3
    assert np.allclose(np.cov(embeddings, rowvar=False), np.eye(16), atol=1e-3)


def test_mrl_and_random_projection_init() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=3.0, scale=np.arange(1, 9), size=(500, 8))
    weight, bias = fit_projection(x, 4, "mrl")
    projected = x @ weight.numpy().T + bias.numpy()
    assert np.allclose(projected, (x[:, :4] - x[:, :4].mean(0)) / x[:, :4].std(0, ddof=1), atol=1e-4)
    weight, bias = fit_projection(x, 12, "random", seed=1)
    assert weight.shape == (12, 8) and torch.count_nonzero(bias) == 0
    assert torch.equal(weight, fit_projection(x, 12, "random", seed=1)[0])
    assert weight.std().item() == pytest.approx(1 / np.sqrt(8), rel=0.3)


def test_mrl_init_keeps_a_constant_coordinate_finite(caplog) -> None:
    # all-MiniLM-L6-v2's pooled output has coordinates that are constant (to 1e-32) on every text;
    # dividing by their std gave weights of 1e12 and a training loss of 1e6.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    x[:, 2] = 1e-32 * rng.normal(size=200)
    with caplog.at_level("WARNING", logger="ragcun.model"):
        weight, bias = fit_projection(x, 4, "mrl")
    assert weight.abs().max().item() < 1e5
    projected = x @ weight.numpy().T + bias.numpy()
    assert np.abs(projected[:, 2]).max() < 1e-20
    assert np.allclose(projected[:, [0, 1, 3]].std(0, ddof=1), 1.0)
    assert "1 of the first 4 coordinates barely vary" in caplog.text
    for init in ("mrl", "whiten"):
        with pytest.raises(ValueError, match="are identical"):
            fit_projection(np.ones((20, 6)), 4, init)


def test_freezing(tiny_base_dir) -> None:
    model = build_model(str(tiny_base_dir), output_dim=8, init="random", freeze_layers=1, freeze_embeddings=True)
    layers = model[0].auto_model.layers
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not model[0].auto_model.get_input_embeddings().weight.requires_grad
    assert model[-1].linear.weight.requires_grad
    with pytest.raises(ValueError, match="only 2 transformer layers"):
        build_model(str(tiny_base_dir), output_dim=8, init="random", freeze_layers=3)


def test_max_seq_length(tiny_base_dir) -> None:
    model = build_model(str(tiny_base_dir), output_dim=8, init="random", freeze_layers=0, max_seq_length=7)
    assert model.max_seq_length == 7
    assert model.preprocess(["a " * 50])["input_ids"].shape[1] == 7


@pytest.mark.slow
def test_saved_model_loads_without_ragcun(model, tmp_path: Path) -> None:
    """A user with only sentence-transformers installed gets the same model back."""
    save_dir = tmp_path / "ragcun-tiny"
    model.save(str(save_dir))
    texts = ["planets orbit the sun", "boil pasta in salted water"]
    expected = {"query": model.encode_query(texts), "document": model.encode_document(texts)}
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["ragcun"] = None  # any import of ragcun now fails
        import numpy as np
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer({str(save_dir)!r}, device="cpu")
        texts = {texts!r}
        np.save({str(tmp_path / "query.npy")!r}, model.encode_query(texts))
        np.save({str(tmp_path / "document.npy")!r}, model.encode_document(texts))
        print(json.dumps({{"similarity": model.similarity_fn_name, "prompts": model.prompts,
                          "modules": [type(m).__name__ for m in model]}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["similarity"] == "euclidean"
    assert info["prompts"]["query"] == "task: search result | query: "
    assert info["modules"] == ["Transformer", "Pooling", "Dense", "Dense", "Dense"]
    assert "ragcun" not in (save_dir / "modules.json").read_text()
    for name, embeddings in expected.items():
        assert np.array_equal(np.load(tmp_path / f"{name}.npy"), embeddings), name


@pytest.mark.parametrize("output_dim", [0, -3])
def test_output_dim_must_be_positive(tiny_base_dir, output_dim: int) -> None:
    with pytest.raises(ValueError, match="output_dim must be a positive integer"):
        build_model(str(tiny_base_dir), output_dim=output_dim, init="random")


def test_whiten_cannot_widen(tiny_base_dir) -> None:
    with pytest.raises(ValueError, match="larger than the base's embedding dimension 32"):
        build_model(str(tiny_base_dir), output_dim=64, init="whiten", init_texts=init_texts())


def test_whiten_needs_enough_texts(tiny_base_dir) -> None:
    with pytest.raises(ValueError, match="needs more than 16 texts"):
        build_model(str(tiny_base_dir), output_dim=16, init="whiten", init_texts=["one text", "another text"])
    with pytest.raises(ValueError, match="pass init_texts"):
        build_model(str(tiny_base_dir), output_dim=16, init="whiten")


def test_unknown_init_and_prompt(tiny_base_dir) -> None:
    with pytest.raises(ValueError, match="Unknown projection init 'pca'"):
        build_model(str(tiny_base_dir), init="pca")
    with pytest.raises(ValueError, match="prompt 'passage'"):
        build_model(str(tiny_base_dir), output_dim=4, init="mrl", init_texts={"passage": ["some text"] * 8})


def test_unknown_base_while_offline() -> None:
    with pytest.raises(ValueError, match="Could not load the base model 'no-such-org/no-such-model'"):
        build_model("no-such-org/no-such-model", init="random")


def test_base_without_pooling(tiny_base_dir) -> None:
    no_pooling = SentenceTransformer(modules=[Transformer(str(tiny_base_dir))], device="cpu")
    with pytest.raises(ValueError, match="no Pooling module"):
        build_model(no_pooling, output_dim=8, init="random")


def test_a_routed_model_is_refused_where_one_route_is_expected(tiny_base_dir, tmp_path) -> None:
    from sentence_transformers.base.modules.router import Router

    from ragcun.model import load_base

    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    router = Router.for_query_document(query_modules=[Dense(32, 8)], document_modules=[Dense(32, 8)])
    routed = SentenceTransformer(modules=[*base, router], device="cpu")
    with pytest.raises(ValueError, match="Router .* single module stack"):
        load_base(routed)
    routed.save(str(tmp_path / "routed"))
    with pytest.raises(ValueError, match="Router .* single module stack"):
        load_base(str(tmp_path / "routed"))
