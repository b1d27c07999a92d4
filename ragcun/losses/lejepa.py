"""LeJEPA-style objective for retrieval: Euclidean in-batch ranking plus SIGReg on every embedding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

from ragcun.losses.euclidean_mnrl import EuclideanMNRLoss
from ragcun.losses.sigreg import LEJEPA_CITATION, SIGReg


class LeJEPALoss(nn.Module):
    """``lambda_contrastive · EuclideanMNRL + lambda_isotropy · SIGReg``, from one forward pass.

    The ranking term pulls queries toward their documents; SIGReg keeps the whole cloud of
    embeddings (queries, positives and negatives together) an isotropic N(0, I), so plain L2
    distances stay meaningful and calibrated. Returns a dict of the weighted parts; the trainer
    sums them and logs each one.

    Args:
        model: the SentenceTransformer being trained.
        lambda_contrastive: weight of the Euclidean MNRL term.
        lambda_isotropy: weight of SIGReg. SIGReg's value grows with the batch size (it is N times
            a squared distance), so the right weight depends on the batch.
        num_slices: random directions per step.
        scale: the MNRL logit scale per unit of L2 distance (see :class:`EuclideanMNRLoss`).
        gather_across_devices: gather MNRL candidates across processes; None: when distributed.
        num_knots, t_max: the Epps–Pulley quadrature.
        seed: seeds the SIGReg directions (combined with the step).
        **sigreg_options: SIGReg's shape-aware slices and cross-batch memory (``num_principal``,
            ``memory_size``, ``memory_max_age``, ``principal_horizon``, ``principal_refresh``; see
            :class:`SIGReg`, whose defaults apply; ``num_principal=0`` is LeJEPA's random slices alone).
    """

    def __init__(
        self,
        model: nn.Module,
        lambda_contrastive: float = 1.0,
        lambda_isotropy: float = 0.01,
        num_slices: int = 1024,
        scale: float = 1.0,
        gather_across_devices: bool | None = None,
        num_knots: int = 17,
        t_max: float = 3.0,
        seed: int = 0,
        **sigreg_options: Any,
    ) -> None:
        super().__init__()
        for name, value in (("lambda_contrastive", lambda_contrastive), ("lambda_isotropy", lambda_isotropy)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}. Use 0 to switch that term off.")
        if lambda_contrastive == 0 and lambda_isotropy == 0:
            raise ValueError("lambda_contrastive and lambda_isotropy are both 0: nothing would be trained.")
        self.model = model
        self.lambda_contrastive = lambda_contrastive
        self.lambda_isotropy = lambda_isotropy
        self.contrastive = EuclideanMNRLoss(model, scale=scale, gather_across_devices=gather_across_devices)
        self.sigreg = SIGReg(num_slices=num_slices, num_knots=num_knots, t_max=t_max, seed=seed, **sigreg_options)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict[str, Tensor]:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> dict[str, Tensor]:
        if not embeddings or embeddings[0].shape[0] == 0:
            raise ValueError("LeJEPALoss got an empty batch: check that the training dataset is not empty.")
        parts: dict[str, Tensor] = {}
        if self.lambda_contrastive > 0:
            parts["contrastive"] = self.lambda_contrastive * self.contrastive.compute_loss_from_embeddings(
                embeddings, labels
            )
        if self.lambda_isotropy > 0:
            parts["sigreg"] = self.lambda_isotropy * self.sigreg(torch.cat(embeddings, dim=0))
        return parts

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "lambda_contrastive": self.lambda_contrastive,
            "lambda_isotropy": self.lambda_isotropy,
            "scale": self.contrastive.scale,
            "gather_across_devices": self.contrastive._gather_setting,
            **self.sigreg.get_config_dict(),
        }

    @property
    def citation(self) -> str:
        return LEJEPA_CITATION + self.contrastive.citation


class CachedLeJEPALoss(CachedLossMixin, LeJEPALoss):
    """LeJEPALoss with GradCache: a batch of 128+ in the activation memory of ``mini_batch_size``.

    The batch is embedded in mini-batches without a graph, the loss (MNRL and SIGReg on the *full*
    batch) is back-propagated to the embeddings, and the mini-batches are re-embedded with a graph to
    carry those cached gradients into the model (sentence-transformers' ``CachedLossMixin``).
    """

    def __init__(self, model: nn.Module, *args: Any, mini_batch_size: int = 16, show_progress_bar: bool = False, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size}.")
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = show_progress_bar
        self._last_parts: dict[str, Tensor] = {}

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False) -> Tensor:
        parts = LeJEPALoss.compute_loss_from_embeddings(self, [torch.cat(column) for column in reps], labels)
        total = torch.stack(list(parts.values())).sum()
        if with_backward:
            total.backward()
            total = total.detach()
        self._last_parts = {name: part.detach() for name, part in parts.items()}
        return total

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict[str, Tensor]:
        total = self.forward_cached(sentence_features, labels)
        # Report the parts for logging while keeping the backward hook on ``total``: every part but
        # the first is a constant, and the first absorbs them so the parts still sum to ``total``.
        names = list(self._last_parts)
        rest = sum((self._last_parts[name] for name in names[1:]), torch.zeros_like(total))
        return {names[0]: total - rest, **{name: self._last_parts[name] for name in names[1:]}}

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}
