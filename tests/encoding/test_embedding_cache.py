"""The embedding cache: shards make a long encode resumable, and a finished list is one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from ragcun.encoding.cache import encode_cached
from tests.helpers import tiny_texts


@pytest.fixture(scope="module")
def model(tiny_base_dir) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_base_dir), device="cpu")


def test_interrupted_encode_resumes_from_finished_shards(model, tmp_path: Path, monkeypatch) -> None:
    _, passages = tiny_texts()
    texts = passages[:50]
    expected = model.encode(texts, prompt_name="document", convert_to_numpy=True, normalize_embeddings=False)
    original_encode, calls = SentenceTransformer.encode, []

    def dies_on_third_shard(self, sentences, *args, **kwargs):
        calls.append(len(sentences))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed while encoding the third shard
        return original_encode(self, sentences, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        encode_cached(model, "tiny", texts, "document", tmp_path, shard_size=16)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(".part-" in name for name in names)  # two finished shards, no full file

    calls.clear()
    def counts(self, sentences, *args, **kwargs):
        calls.append(len(sentences))
        return original_encode(self, sentences, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", counts)
    resumed = encode_cached(model, "tiny", texts, "document", tmp_path, shard_size=16)
    assert calls == [16, 2]  # only the shards that were missing
    np.testing.assert_allclose(resumed, expected, rtol=1e-5, atol=1e-6)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and ".part-" not in names[0]  # shards joined into one file and removed

    calls.clear()
    again = encode_cached(model, "tiny", texts, "document", tmp_path, shard_size=16)
    assert calls == [] and np.array_equal(again, resumed)
