"""LeJEPA-style objective for retrieval: Euclidean in-batch ranking plus SIGReg on every embedding."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

from ragcun.losses.batch_whitening import BatchWhitening
from ragcun.losses.euclidean_mnrl import EuclideanMNRLoss, negative_l2_distance
from ragcun.losses.sigreg import LEJEPA_CITATION, SIGReg, SIGRegByRole


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
        lambda_anchor: weight of the anchor to the base's ranking (0: off): per query, the KL divergence
            from the base's in-batch score distribution to the trained model's, both scored as MNRL
            scores (``−scale · L2``, softmax over the batch's documents). The base's unit vectors are
            first multiplied by ``anchor_scale``, so they are in the model's units: a head that is
            that uniform scale (head-only training's ``scaled`` init) has divergence 0, and only a
            change of ranking, not of spread, is penalized.
        anchor_model: the frozen base as a module that maps the same features to its
            ``sentence_embedding`` (normalized here); with head-only training, the cached lookup (no
            extra encoding).
        anchor_scale: the factor bringing the base's unit vectors to unit average variance (√D for
            isotropic ones); None: estimated on each batch.
        isotropy_by_role: test the queries (first column) and the documents (the other columns) against N(0, I)
            apart, the mean of the two statistics, instead of their union: when queries and documents form two
            clouds with different means, the union can look centred as a mixture, while each role's test sees its
            own offset. Each role keeps its own principal directions and memory (:class:`SIGRegByRole`).
        whitening: whiten every column's embeddings together before the terms (:class:`BatchWhitening`, with
            gradients through it): the model learns to make the whitened space rank well, SIGReg then only shapes
            the marginals, and the anchor compares the whitened model's ranking with the base's.
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
        lambda_anchor: float = 0.0,
        anchor_model: nn.Module | None = None,
        anchor_scale: float | None = None,
        isotropy_by_role: bool = False,
        whitening: BatchWhitening | None = None,
        **sigreg_options: Any,
    ) -> None:
        super().__init__()
        if lambda_anchor < 0:
            raise ValueError(f"lambda_anchor must be >= 0, got {lambda_anchor}. Use 0 to switch the anchor off.")
        if lambda_anchor > 0 and anchor_model is None:
            raise ValueError("lambda_anchor > 0 needs anchor_model: the frozen base whose ranking the anchor keeps.")
        if anchor_scale is not None and anchor_scale <= 0:
            raise ValueError(f"anchor_scale must be positive, got {anchor_scale}.")
        for name, value in (("lambda_contrastive", lambda_contrastive), ("lambda_isotropy", lambda_isotropy)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}. Use 0 to switch that term off.")
        if lambda_contrastive == 0 and lambda_isotropy == 0:
            raise ValueError("lambda_contrastive and lambda_isotropy are both 0: nothing would be trained.")
        self.model = model
        self.lambda_contrastive = lambda_contrastive
        self.lambda_isotropy = lambda_isotropy
        self.contrastive = EuclideanMNRLoss(model, scale=scale, gather_across_devices=gather_across_devices)
        sigreg_kwargs = dict(num_slices=num_slices, num_knots=num_knots, t_max=t_max, seed=seed, **sigreg_options)
        self.sigreg: SIGReg | SIGRegByRole = (SIGRegByRole(**sigreg_kwargs) if isotropy_by_role
                                              else SIGReg(**sigreg_kwargs))
        self.lambda_anchor = lambda_anchor
        self.anchor_scale = anchor_scale
        self.isotropy_by_role = isotropy_by_role
        self.whitening = whitening
        # a plain attribute, not a submodule: the teacher is neither trained nor saved with the loss
        self.__dict__["anchor_model"] = anchor_model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict[str, Tensor]:
        features = list(sentence_features)
        embeddings = embed_columns(self.model, features)
        if self.whitening is not None:
            sizes = [len(column) for column in embeddings]
            embeddings = list(self.whitening(torch.cat(embeddings)).split(sizes))
        parts = self.compute_loss_from_embeddings(embeddings, labels)
        if self.lambda_anchor > 0:
            parts["anchor"] = self.lambda_anchor * self.anchor_divergence(features, embeddings)
        return parts

    def anchor_divergence(self, features: list[dict[str, Tensor]], embeddings: list[Tensor]) -> Tensor:
        """KL(base ‖ model) of each query's softmax over the batch's documents: keeps the base's in-batch ranking."""
        with torch.no_grad():
            teacher = [nn.functional.normalize(self.anchor_model(dict(column))["sentence_embedding"].float(), dim=-1)
                       for column in features]
            factor = self.anchor_scale or float(torch.cat(teacher).var(dim=0).mean().rsqrt())
            base_logits = self.contrastive.scale * negative_l2_distance(factor * teacher[0], factor * torch.cat(teacher[1:]))
        logits = self.contrastive.scale * negative_l2_distance(embeddings[0], torch.cat(embeddings[1:]))
        return nn.functional.kl_div(logits.log_softmax(-1), base_logits.log_softmax(-1), log_target=True,
                                    reduction="batchmean")

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> dict[str, Tensor]:
        if not embeddings or embeddings[0].shape[0] == 0:
            raise ValueError("LeJEPALoss got an empty batch: check that the training dataset is not empty.")
        parts: dict[str, Tensor] = {}
        if self.lambda_contrastive > 0:
            parts["contrastive"] = self.lambda_contrastive * self.contrastive.compute_loss_from_embeddings(
                embeddings, labels
            )
        if self.lambda_isotropy > 0:
            if isinstance(self.sigreg, SIGRegByRole):
                if len(embeddings) < 2:
                    raise ValueError("isotropy_by_role needs queries and documents: the batch has one column.")
                # queries (the first column) and documents (the rest) tested apart: each must be N(0, I) on its own
                statistic = self.sigreg(embeddings[0], torch.cat(embeddings[1:], dim=0))
            else:
                statistic = self.sigreg(torch.cat(embeddings, dim=0))
            parts["sigreg"] = self.lambda_isotropy * statistic
        return parts

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "lambda_contrastive": self.lambda_contrastive,
            "lambda_isotropy": self.lambda_isotropy,
            "scale": self.contrastive.scale,
            "gather_across_devices": self.contrastive._gather_setting,
            "lambda_anchor": self.lambda_anchor,
            "anchor_scale": self.anchor_scale,
            "isotropy_by_role": self.isotropy_by_role,
            "whitening_in_loss": self.whitening is not None,
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
        if self.lambda_anchor > 0:
            raise ValueError("CachedLeJEPALoss (GradCache) does not support the anchor (lambda_anchor): use LeJEPALoss.")
        if self.whitening is not None:
            raise ValueError("CachedLeJEPALoss (GradCache) does not support whitening in the loss: use LeJEPALoss.")
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
