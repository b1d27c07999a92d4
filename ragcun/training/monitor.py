"""What the trainer watches: isotropy and retrieval on a fixed held-out sample, and SIGReg's step.

The evaluator runs every ``eval_steps`` inside ``SentenceTransformerTrainer``; its figures are logged
as ``eval_<name>_<figure>`` and any of them can be ``metric_for_best_model``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ragcun.io import atomic_write
from ragcun.isotropy import isotropy_figures, isotropy_report
from ragcun.losses import SIGReg, SIGRegByRole

logger = logging.getLogger(__name__)

LOGGED_ISOTROPY = isotropy_figures(
    "mean_norm", "mean_norm_excess", "norm_mean", "expected_norm_mean", "variance_mean", "variance_min", "variance_max",
    "cov_identity_fro", "cov_identity_fro_floor", "cov_floor_ratio", "mean_abs_offdiag_corr",
    "mean_abs_offdiag_corr_floor", "offdiag_corr_excess", "sigreg", "is_isotropic", "marginal_ep_max", "marginal_ep_max_floor",
    "norm_ks", "is_gaussian",
)


# Which way each logged figure improves. Retrieval figures and the verdict grow; distances from N(0, I) shrink. The
# rest (variances, norms, floors) are best at a target value, not at an end, so they cannot pick a checkpoint alone.
GREATER_IS_BETTER = frozenset({"mrr@10", "recall@10", "is_isotropic", "is_gaussian"})
LOWER_IS_BETTER = frozenset(isotropy_figures(
    "mean_norm", "mean_norm_excess", "cov_identity_fro", "cov_floor_ratio", "mean_abs_offdiag_corr",
    "offdiag_corr_excess", "sigreg", "marginal_ep_max", "norm_ks", among=LOGGED_ISOTROPY))


def greater_is_better(metric: str) -> bool:
    """Whether a larger ``metric_for_best_model`` is better: ``eval_heldout_sigreg`` is not, a loss is not.

    Accepts the name as logged (``eval_heldout_mrr@10``) or without its prefixes; names this module does not log
    keep transformers' rule (greater is better unless the name ends in ``loss``)."""
    figure = metric.removeprefix("eval_").removeprefix("heldout_")
    if figure in GREATER_IS_BETTER:
        return True
    if figure in LOWER_IS_BETTER:
        return False
    if figure in LOGGED_ISOTROPY:
        raise ValueError(
            f"metric_for_best_model {metric!r} is best at a target value (N(0, I)'s), not at its largest or smallest: "
            f"pick one of {sorted(GREATER_IS_BETTER | LOWER_IS_BETTER)}, or set greater_is_better yourself."
        )
    return not metric.endswith("loss")


def ranking_at_10(query_embeddings: torch.Tensor, doc_embeddings: torch.Tensor, model: SentenceTransformer) -> dict[str, float]:
    """MRR@10 and Recall@10 where document i is the one relevant document of query i.

    Scores come from ``model.similarity``, so a euclidean model is ranked by L2 distance and a
    cosine base by cosine: each model is judged with the similarity it was built for.
    """
    scores = model.similarity(query_embeddings, doc_embeddings)
    own = scores.diagonal().unsqueeze(1)
    # rank of the relevant document: 1 + how many score strictly higher (ties count in its favour)
    ranks = 1 + (scores > own).sum(dim=1)
    reciprocal = torch.where(ranks <= 10, 1.0 / ranks.double(), torch.zeros_like(ranks, dtype=torch.float64))
    return {"mrr@10": float(reciprocal.mean()), "recall@10": float((ranks <= 10).double().mean())}


class IsotropyRetrievalEvaluator(SentenceEvaluator):
    """``isotropy_report`` of the held-out queries and documents together, plus MRR@10 / Recall@10 of held-out pairs.

    ``documents[i]`` answers ``queries[i]``; ``extra_documents`` (e.g. hard negatives) only widen the
    pool of candidates and the isotropy sample. Queries and documents are encoded with the model's
    ``query`` / ``document`` prompts when it has them, as at inference. Both are in the isotropy sample
    because both are what the model claims to map to N(0, I) (SIGReg trains on every column).
    """

    def __init__(
        self,
        queries: list[str],
        documents: list[str],
        extra_documents: list[str] | None = None,
        name: str = "heldout",
        batch_size: int = 32,
        primary_metric: str = "mrr@10",
        sigreg_slices: int = 256,
    ) -> None:
        super().__init__()
        if len(queries) != len(documents) or not queries:
            raise ValueError(f"Need one relevant document per query, got {len(queries)} queries and {len(documents)} documents.")
        self.queries = list(queries)
        self.documents = list(documents) + list(extra_documents or [])
        self._distinct_queries = sorted({text: row for row, text in reversed(list(enumerate(self.queries)))}.values())
        self._distinct_documents = sorted({text: row for row, text in reversed(list(enumerate(self.documents)))}.values())
        self.name = name
        self.batch_size = batch_size
        self.sigreg_slices = sigreg_slices
        known = {"mrr@10", "recall@10", *LOGGED_ISOTROPY}
        if primary_metric not in known:
            raise ValueError(f"primary_metric {primary_metric!r} is not one of {sorted(known)}.")
        self.primary_metric = primary_metric
        # a figure best at a target value counts as lower-is-better here, as it always has for this evaluator
        self.greater_is_better = primary_metric in GREATER_IS_BETTER

    def _encode(self, model: SentenceTransformer, texts: list[str], prompt_name: str) -> torch.Tensor:
        prompt = prompt_name if prompt_name in model.prompts else None
        return model.encode(
            texts, prompt_name=prompt, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=False
        ).float().cpu()

    def __call__(self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        query_embeddings = self._encode(model, self.queries, "query")
        doc_embeddings = self._encode(model, self.documents, "document")
        metrics: dict[str, Any] = ranking_at_10(query_embeddings, doc_embeddings, model)
        # each distinct text once: a query repeated over many rows (TREC DL) would otherwise count many times
        sample = torch.cat([query_embeddings[self._distinct_queries], doc_embeddings[self._distinct_documents]])
        sample = sample.numpy().astype(np.float64)
        report = isotropy_report(sample, sigreg_slices=self.sigreg_slices)
        metrics.update({key: float(report[key]) for key in LOGGED_ISOTROPY})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {"queries": len(self.queries), "documents": len(self.documents), "sigreg_slices": self.sigreg_slices}


class SIGRegStepCallback(TrainerCallback):
    """Ties SIGReg's random directions to the trainer's global step, and carries its memory across a resume.

    A run resumed from a checkpoint then draws the directions the uninterrupted run would have drawn, and
    every process draws the same ones. SIGReg's cross-batch memory and principal-direction estimate are
    saved beside each checkpoint (one safetensors file per process) and restored from ``resume_from`` only
    if every process can restore its own for the same number of processes; otherwise (a checkpoint saved
    by an older ragcun, a kill between two processes' writes, another world size) every process starts
    empty, which costs a few steps of power, and says so.
    """

    def __init__(self, sigreg: SIGReg | SIGRegByRole, resume_from: str | None = None) -> None:
        self.sigreg = sigreg
        self.resume_from = resume_from

    @staticmethod
    def state_file(checkpoint: str | Path, rank: int) -> Path:
        return Path(checkpoint) / f"sigreg_state-rank{rank}.safetensors"

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from is None:
            return
        path = self.state_file(self.resume_from, args.process_index)
        saved = _read_state(path, args.world_size)
        if not _all_processes_agree(saved is not None):
            logger.warning("%s has no usable SIGReg state for every one of %d processes (%s): resuming with an "
                           "empty SIGReg memory and estimate.", self.resume_from, args.world_size, path.name)
            return
        self.sigreg.load_state(saved)

    def on_step_begin(self, args, state, control, **kwargs):
        self.sigreg.step = state.global_step * args.gradient_accumulation_steps

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        checkpoint.mkdir(parents=True, exist_ok=True)  # every process writes its own file, as with rng_state
        tensors = {k: v.contiguous() for k, v in self.sigreg.state().items()}
        tensors["world_size"] = torch.tensor(args.world_size)
        atomic_write(self.state_file(checkpoint, args.process_index), lambda tmp: save_file(tensors, str(tmp)))


def _read_state(path: Path, world_size: int) -> dict[str, torch.Tensor] | None:
    """The saved SIGReg state, or None when missing, unreadable or saved by another number of processes."""
    try:
        saved = load_file(str(path))
    except (OSError, SafetensorError):
        return None
    if int(saved.pop("world_size", torch.tensor(-1))) != world_size:
        return None
    return saved


def _all_processes_agree(flag: bool) -> bool:
    """True only if ``flag`` holds on every process (collective when distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([int(flag)])
    if torch.distributed.get_backend() == "nccl":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())
