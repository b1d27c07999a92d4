"""A SentenceTransformer adapted for mteb: its own similarity, pairwise too, under an explicit name and revision."""

from __future__ import annotations

import re
import warnings
from typing import Any

from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
from mteb.similarity_functions import _upcast_low_precision
from sentence_transformers import SentenceTransformer

from ragcun.evaluation.mteb.tasks import SAFE_NAME
from ragcun.identity import weights_revision


def check_model_name(name: str) -> str:
    """An 'organization/model_name' that is safe as a results folder, or ValueError before any model time is spent."""
    if not isinstance(name, str) or "/" not in name.strip("/") or not re.fullmatch(r"[A-Za-z0-9._+\- /]+", name):
        raise ValueError(
            f"Model name {name!r} must look like 'organization/model_name' (mteb's convention; letters, digits, "
            "'.', '_', '+', '-'), e.g. 'ragcun/embeddinggemma-lejepa-512'. It names the results folder, so give each "
            "fine-tuned model its own."
        )
    if any(part.strip() in {"", ".", ".."} for part in name.split("/")):
        raise ValueError(f"Model name {name!r} must not have empty, '.' or '..' parts.")
    return name


def check_revision(revision: str) -> str:
    """A revision that is safe as one results sub-folder, or ValueError."""
    if not isinstance(revision, str) or not SAFE_NAME.match(revision):
        raise ValueError(
            f"Revision {revision!r} must be a non-empty folder-name-safe string (letters, digits, '.', '_', '+', '-')."
        )
    return revision


class RagcunEncoderWrapper(SentenceTransformerEncoderWrapper):
    """mteb's SentenceTransformer wrapper with the model's own *pairwise* similarity and an explicit name/revision.

    Why: in mteb 2.26 ``SentenceTransformerEncoderWrapper`` overrides ``similarity`` (so retrieval already ranks
    by the model's negative L2) but not ``similarity_pairwise``, which STS and PairClassification call; it falls
    through to ``AbsEncoder.similarity_pairwise``, which handles only cosine, dot and max-sim and raises
    "Similarity function not specified." for a euclidean model. This subclass adds the missing method (mteb's
    own extension point, no monkeypatching); ``mteb.evaluate`` takes any object with an ``mteb_model_meta``.
    The explicit name keeps a fine-tuned model's results apart from its base model's. Build with
    :func:`mteb_model`.
    """

    def __init__(
        self,
        model: str | SentenceTransformer,
        revision: str | None = None,
        device: str | None = None,
        model_prompts: dict[str, str] | None = None,
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if name is None and isinstance(model, str):
            name = model  # mteb's ModelMeta.load_model calls loader(name, revision=...)
        if name is None:
            raise ValueError("Pass an explicit model name ('organization/model_name') for the mteb results.")
        check_model_name(name)
        with warnings.catch_warnings():
            # mteb 2.26's ModelMeta.from_sentence_transformer_model warns about its deprecated arguments on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(model, revision=revision, device=device, model_prompts=model_prompts, **kwargs)
        revision = check_revision(revision if revision is not None else weights_revision(self.model))
        self.mteb_model_meta = self.mteb_model_meta.model_copy(
            update={"name": name, "revision": revision, "loader": type(self)}
        )

    def similarity_pairwise(self, embeddings1, embeddings2):
        """Similarity of row i with row i: the model's own (negative L2 distance for a euclidean model)."""
        pairwise = getattr(self.model, "similarity_pairwise", None)
        if callable(pairwise):
            return pairwise(_upcast_low_precision(embeddings1), _upcast_low_precision(embeddings2))
        return super().similarity_pairwise(embeddings1, embeddings2)


def mteb_model(
    model: SentenceTransformer,
    name: str,
    revision: str | None = None,
    model_prompts: dict[str, str] | None = None,
) -> RagcunEncoderWrapper:
    """``model`` wrapped for mteb: its own similarity (also pairwise), results filed under ``name``/``revision``.

    Args:
        model: a loaded SentenceTransformer (a euclidean ragcun model or any other).
        name: 'organization/model_name' for the results folder; give each fine-tuned model its own.
        revision: results sub-folder; default :func:`weights_revision` (it changes whenever the weights do).
        model_prompts: prompts by task name / task type / 'query' / 'document', overriding the model's own
            (mteb's ``model_prompts``); by default the model's own prompts are used.
    """
    if not isinstance(model, SentenceTransformer):
        raise TypeError(f"mteb_model expects a SentenceTransformer, got {type(model).__name__}.")
    return RagcunEncoderWrapper(model, revision=revision, model_prompts=model_prompts, name=name)
