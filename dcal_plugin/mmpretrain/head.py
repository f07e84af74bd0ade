"""``DCALClsHead``: per-branch classifiers, uncertainty-weighted cross-entropy, fused SA + GLCA prediction."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ..core import BRANCHES, LOG_VAR_BOUNDS, UncertaintyWeightedLoss
from ..core.output import fused_scores


@MODELS.register_module()
class DCALClsHead(ClsHead):
    """Classifies the branch features of :class:`DCALVisionTransformer` (METHOD §5–6).

    SA and PWCA share one classifier (PWCA shares every weight with SA); GLCA has its own. The
    training loss is :class:`~dcal_plugin.core.UncertaintyWeightedLoss` over the three branch
    losses (``loss`` config: cross-entropy, label smoothing, ...), returned as the weighted terms
    ``loss_sa``, ``loss_glca``, ``loss_pwca`` (mmengine sums every key containing "loss", so
    they add up to the total) plus diagnostics ``ce_*`` (unweighted branch losses) and
    ``weight_*`` (``exp(-w)``). Prediction: ``pred_score = (softmax(sa) + softmax(glca)) / 2``,
    the paper's summed probabilities halved so they stay a distribution (same argmax); the branch
    probabilities are kept as ``sa_score`` and ``glca_score`` for :class:`DCALBranchAccuracy`.
    A branch whose feature is None (switched off in the backbone for an ablation) has no loss
    term, no log entries and no score; without GLCA the prediction is SA's. A head built with
    ``use_glca=False`` has no GLCA classifier, so that every parameter trains (DDP without
    ``find_unused_parameters``); :class:`~dcal_plugin.mmpretrain.DCALClassifier` sets it from the
    backbone.

    Args:
        num_classes (int): number of classes K.
        in_channels (int): feature width C.
        loss (dict): per-branch classification loss. Defaults to cross-entropy.
        log_var_bounds (tuple[float, float] | None): box of the uncertainty log-variances, as
            :class:`~dcal_plugin.core.UncertaintyWeightedLoss`. Defaults to ``(-2.0, 2.0)``.
        use_glca (bool): build GLCA's classifier; False for a backbone without GLCA. Defaults to True.
        init_cfg (dict): Defaults to truncated-normal (std 0.02) linear layers, as timm.
    """

    def __init__(
            self,
            num_classes: int,
            in_channels: int,
            loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
            log_var_bounds: Optional[Tuple[float, float]] = LOG_VAR_BOUNDS,
            use_glca: bool = True,
            init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=0.02),
            **kwargs,
    ) -> None:
        super().__init__(loss=loss, init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.sa_fc = nn.Linear(in_channels, num_classes)
        self.glca_fc = nn.Linear(in_channels, num_classes) if use_glca else None
        self.loss_weighting = UncertaintyWeightedLoss(num_tasks=len(BRANCHES), log_var_bounds=log_var_bounds)

    def forward(self, feats: Sequence[Optional[Tensor]]) -> Tuple[Optional[Tensor], ...]:
        """Branch features ``(sa, glca[, pwca])`` ``[B, C]`` or None -> logits ``[B, K]`` or None, in the same order."""
        classifiers = (self.sa_fc, self.glca_fc, self.sa_fc)
        return tuple(None if feature is None else classifier(feature)
                     for classifier, feature in zip(classifiers, feats))

    def pre_logits(self, feats: Sequence[Optional[Tensor]]) -> Tensor:
        """Branch features ``(sa, glca[, pwca])`` -> what the prediction classifies: SA ‖ GLCA ``[B, 2C]`` (SA alone
        without GLCA).

        ``ImageClassifier.extract_feat(stage='pre_logits')`` returns it (mmpretrain's feature
        extraction); PWCA, a training branch, is left out.
        """
        return torch.cat([feature for feature in feats[:2] if feature is not None], dim=-1)

    def loss(self, feats: Sequence[Optional[Tensor]], data_samples: List[DataSample], **kwargs) -> dict:
        """Uncertainty-weighted losses of the branches present in the train-mode features ``(sa, glca, pwca)``."""
        if len(feats) != len(BRANCHES):
            raise ValueError(f'DCALClsHead.loss needs the branch features {BRANCHES} (None for a branch switched '
                             f'off), got {len(feats)}')
        if (feats[1] is None) != (self.glca_fc is None):
            raise ValueError(f'the backbone {"has no" if feats[1] is None else "has a"} GLCA branch but the head was '
                             f'built with use_glca={self.glca_fc is not None}: build the model as '
                             "type='DCALClassifier', which sets the head's use_glca from the backbone")
        branch_losses = [None if logits is None else self._get_loss(logits, data_samples, **kwargs)['loss']
                         for logits in self(feats)]
        present = [name for name, value in zip(BRANCHES, branch_losses) if value is not None]
        terms = self.loss_weighting.terms(branch_losses)
        weights = self.loss_weighting.weights
        losses = {f'loss_{name}': term for name, term in zip(present, terms)}
        for name, value, weight in zip(BRANCHES, branch_losses, weights):
            if value is not None:
                losses.update({f'ce_{name}': value.detach(), f'weight_{name}': weight})
        return losses

    def predict(self, feats: Sequence[Optional[Tensor]],
                data_samples: Optional[List[DataSample]] = None) -> List[DataSample]:
        """Data samples with ``pred_score``/``pred_label`` (fused SA + GLCA) and the branch scores."""
        with torch.no_grad():
            fused, branch_scores = self.scores(self(feats))
        if data_samples is None:
            data_samples = [DataSample() for _ in range(fused.shape[0])]
        for index, sample in enumerate(data_samples):
            sample.set_pred_score(fused[index]).set_pred_label(fused[index].argmax(dim=-1, keepdim=True))
            for name, scores in branch_scores.items():
                sample.set_field(scores[index], f'{name}_score', dtype=torch.Tensor)
        return data_samples

    @staticmethod
    def scores(logits: Sequence[Optional[Tensor]]) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Branch logits ``(sa, glca[, pwca])`` ``[B, K]`` or None -> ``pred_score`` ``[B, K]`` and
        ``{branch: softmax}``.

        The core's :func:`~dcal_plugin.core.output.fused_scores`: the mean of the SA and GLCA
        probabilities (SA's alone without GLCA), float32.
        """
        return fused_scores(logits[0], logits[1])
