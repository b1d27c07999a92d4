"""In-batch-negatives ranking loss scored by Euclidean distance instead of cosine similarity."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from torch import Tensor, nn

from ragcun.distance import squared_l2


def negative_l2_distance(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """−‖aᵢ − bⱼ‖ for every pair, with a finite gradient when two embeddings coincide.

    The same squared distances as the evaluation scores with (:func:`ragcun.distance.squared_l2`), floored
    differently: ``torch.cdist`` back-propagates NaN at distance 0 (d√x/dx is infinite there), and so
    would a floor at 0. Clamping the squared distance to ``eps`` makes that gradient exactly 0 instead,
    which is also the right answer: moving either point changes a zero distance only at second order.
    """
    return -squared_l2(a, b).clamp_min(eps).sqrt()


class EuclideanMNRLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss with logits ``−scale · ‖q − d‖``: in-batch and hard negatives by L2.

    Why ``scale=1.0``: cosine MNRL's usual scale of 20 on unit vectors gives logits whose slope in the
    distance is 20·d ≈ 28 per unit of distance at the typical distance √2 between unrelated unit
    vectors. N(0, I_D) embeddings are √D times larger (distance ≈ √(2D) ≈ 32 at D=512), so the same
    slope per unit of distance is 28/√D ≈ 1.25 at D=512: a scale near 1 keeps the softmax as sharp
    as the cosine default without saturating. A much smaller scale (0.3 in our trials) lets the
    loss buy margin by inflating norms, which fights SIGReg; a much larger one saturates.

    Any number of hard-negative columns is supported, exactly as in the parent loss.
    ``gather_across_devices=None`` gathers candidates across processes only when torch.distributed
    is running, so the loss equals the single-process loss on the global batch.
    """

    def __init__(self, model: nn.Module, scale: float = 1.0, gather_across_devices: bool | None = None, **kwargs: Any):
        super().__init__(
            model, scale=scale, similarity_fct=negative_l2_distance, gather_across_devices=gather_across_devices, **kwargs
        )

    @property
    def gather_across_devices(self) -> bool:
        if self._gather_setting is None:
            return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return self._gather_setting

    @gather_across_devices.setter
    def gather_across_devices(self, value: bool | None) -> None:
        self._gather_setting = value

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        config["gather_across_devices"] = self._gather_setting
        return config
