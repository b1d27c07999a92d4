"""A frozen base as a lookup table: training (CachedEmbeddings) and evaluation (MemoizedBase) share its keys and
its file, and checkpoints that name the lookup module by its first path still load as a resumed run loads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from ragcun.cached_input import CachedEmbeddings
from ragcun.encoding.table import save_table, text_key

PROMPTS = {"query": "query: ", "document": "text: "}
QUERIES = ["planets orbit the sun", "why does bread rise"]
DOCUMENTS = ["yeast makes bread rise", "jazz uses improvisation"]


def rows(count: int) -> np.ndarray:
    return np.arange(count * 3, dtype=np.float32).reshape(count, 3)


def load_checkpoint(folder: Path) -> SentenceTransformer:
    """As SentenceTransformerTrainer reloads a checkpoint on resuming: the classes of the model being trained stand
    for the types that modules.json names (never by importing whatever a folder names)."""
    return SentenceTransformer._load_with_module_classes(
        str(folder), {"ragcun.cached_input.CachedEmbeddings": CachedEmbeddings}, device="cpu")


def write_checkpoint(folder: Path, config: dict) -> Path:
    """A head-only checkpoint as ragcun has always written it: the lookup module, named by its class path."""
    folder.mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "ragcun.cached_input.CachedEmbeddings"}]))
    (folder / "cached_embeddings_config.json").write_text(json.dumps(config))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "euclidean"}))
    return folder


@pytest.mark.parametrize("layout", ["one table file", "table and texts, written before"])
def test_a_checkpoint_naming_the_lookup_module_loads_and_looks_texts_up(tmp_path: Path, layout: str) -> None:
    texts = [("query: ", text) for text in QUERIES] + [("text: ", text) for text in DOCUMENTS]
    if layout == "one table file":
        save_table(tmp_path / "t.table.npz", rows(4), [text_key(text, prompt) for prompt, text in texts])
        config = {"table_path": str(tmp_path / "t.table.npz"), "texts_path": None}
    else:  # a .npy matrix and the JSON list of prompt + text
        np.save(tmp_path / "t.table.npy", rows(4))
        (tmp_path / "t.texts.json").write_text(json.dumps([prompt + text for prompt, text in texts]))
        config = {"table_path": str(tmp_path / "t.table.npy"), "texts_path": str(tmp_path / "t.texts.json")}
    model = load_checkpoint(write_checkpoint(tmp_path / "checkpoint-12", config))
    np.testing.assert_array_equal(model.encode(DOCUMENTS[::-1], prompt_name="document"), rows(4)[[3, 2]])
    np.testing.assert_array_equal(model.encode(QUERIES, prompt_name="query"), rows(4)[:2])
    with pytest.raises(ValueError, match="1 of 1 texts were not encoded"):
        model.encode(QUERIES[:1], prompt_name="document")  # encoded with another prompt: not in the table


def test_a_missing_table_is_refused_with_what_to_do(tmp_path: Path) -> None:
    config = {"table_path": str(tmp_path / "gone.table.npz"), "texts_path": None}
    with pytest.raises(FileNotFoundError, match="Restore it, or start the run again"):
        load_checkpoint(write_checkpoint(tmp_path / "checkpoint-1", config))


def test_a_memo_and_a_training_table_are_one_format(tiny_base_dir: Path, tmp_path: Path) -> None:
    """What the evaluation memo stores, the training lookup reads (and back): the same rows for the same prompt and
    text, no text encoded twice."""
    from ragcun.encoding.memoized_base import MemoizedBase

    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    memo = MemoizedBase(base, tmp_path / "base.memo.npz")
    memoized = SentenceTransformer(modules=[memo], prompts=dict(base.prompts), device="cpu")
    expected = memoized.encode(QUERIES, prompt_name="query", convert_to_tensor=True)
    memo.save_memo()
    lookup = SentenceTransformer(modules=[CachedEmbeddings(str(tmp_path / "base.memo.npz"))],
                                 prompts=dict(base.prompts), device="cpu")
    assert torch.equal(lookup.encode(QUERIES, prompt_name="query", convert_to_tensor=True), expected)
    with pytest.raises(ValueError, match="not encoded"):
        lookup.encode(QUERIES, prompt_name="document")  # the prompt is part of the key

    reread = MemoizedBase(base, tmp_path / "base.memo.npz")
    base.encode = None  # type: ignore[assignment]  # every text must come from the table now
    again = SentenceTransformer(modules=[reread], prompts=dict(base.prompts), device="cpu")
    assert torch.equal(again.encode(QUERIES, prompt_name="query", convert_to_tensor=True), expected)


def test_a_checkpoint_on_the_earlier_table_resumes_only_on_the_same_embeddings(tiny_base_dir: Path,
                                                                               tmp_path: Path) -> None:
    """A head-only checkpoint written before the one table format names a .npy and its prompt + text list: the run
    resumes on the new table when it holds the same rows for the same texts, and is refused otherwise."""
    from ragcun.encoding.table import key_parts
    from ragcun.training.head import TextGroups, check_same_table, encode_once

    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    # a held-out text that is also a training text: the new table lists it twice, the earlier index once
    groups = TextGroups(train={"query": QUERIES, "document": DOCUMENTS[:1]}, heldout={"document": DOCUMENTS})
    encoded = encode_once(base, str(tiny_base_dir), groups, tmp_path / "cache", batch_size=4)
    table, keys = encoded.read()
    assert len(keys) > len(set(keys))
    first = sorted({key: row for row, key in reversed(list(enumerate(keys)))}.values())[::-1]  # each text once
    np.save(tmp_path / "old.table.npy", table[first])  # its own row order
    (tmp_path / "old.texts.json").write_text(json.dumps(["".join(key_parts(keys[row])) for row in first]))
    checkpoint = write_checkpoint(tmp_path / "checkpoint-12", {"table_path": str(tmp_path / "old.table.npy"),
                                                               "texts_path": str(tmp_path / "old.texts.json")})
    check_same_table(checkpoint, encoded)
    np.save(tmp_path / "old.table.npy", table[first] + 1.0)  # other embeddings of the same texts
    with pytest.raises(ValueError, match="was trained on the embeddings in"):
        check_same_table(checkpoint, encoded)
