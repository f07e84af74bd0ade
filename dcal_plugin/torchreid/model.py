"""The Re-ID model for torchreid: DCALViT + per-branch BNNeck and ID classifier (TransReID baseline, METHOD §5–7)."""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dcal_plugin.core import BRANCHES, LOG_VAR_BOUNDS, DCALOutput, UncertaintyWeightedLoss, paper_pretrained_tag
from dcal_plugin.core.dcal_model import DCALModel
from dcal_plugin.core.families import dcal_from_timm

REID_LOCAL_QUERY_RATIO = 0.3  # the paper's Re-ID R (METHOD §7)
REID_DROP_PATH_RATE = 0.1  # TransReID's stochastic depth; the paper gives none
RETRIEVAL_NORMS = ('each', 'concat')  # L2 normalisation of the retrieval feature: each branch's half, or the whole


class BNNeck(nn.BatchNorm1d):
    """TransReID's bottleneck: ``BatchNorm1d(C)`` with a learnable scale and a shift fixed at 0.

    The shift is a zero buffer rather than a parameter with ``requires_grad=False``, because
    torchreid's engine re-enables the gradient of every parameter at each epoch
    (``open_all_layers``). The state_dict keys stay those of ``BatchNorm1d``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        del self.bias
        self.register_buffer('bias', torch.zeros(num_features))

    def normalize_with_batch_statistics(self, feature: Tensor) -> Tensor:
        """``[B, C] -> [B, C]`` with this batch's statistics and the shared scale, leaving the running statistics
        alone."""
        return F.batch_norm(feature, None, None, self.weight, self.bias, training=True, eps=self.eps)


class DCALReID(nn.Module):
    """DCAL for object Re-ID in torchreid's train/eval contract (`paper <https://arxiv.org/abs/2205.02151>`_).

    Train mode, called as ``model(imgs, branch_outputs=True)``, returns a
    :class:`~dcal_plugin.core.DCALOutput` whose ``*_feature`` are the branch class tokens before
    BNNeck (for the triplet loss) and ``*_logits`` the ID logits after BNNeck (for cross-entropy),
    for SA, GLCA and PWCA; :class:`~dcal_plugin.torchreid.DCALEngine` consumes it. Without the
    keyword, train mode raises at once: torchreid's own engines expect logits (softmax) or
    ``(logits, features)`` (triplet) and would fail deep inside their loss. Eval mode returns the
    retrieval feature ``[B, 2C]``, which is what torchreid's test loop and ``FeatureExtractor``
    expect: SA's final class token ‖ GLCA's pooled feature (METHOD §6), taken before BNNeck and
    L2-normalised, as TransReID's ViT baseline retrieves (``TEST.NECK_FEAT: 'before'``,
    ``FEAT_NORM: 'yes'``). [ours] ``retrieval_norm='each'`` normalises each branch's half, so
    that SA and GLCA weigh alike in the distance whatever their scales (the squared Euclidean
    distance is the sum of the two halves' cosine distances, times 2); ``'concat'`` normalises
    the concatenation. Either way torchreid's ``normalize_feature`` (which normalises the
    concatenation again) changes no ranking. PWCA shares every weight of
    SA, BNNeck and classifier included; its features are normalised with their own batch
    statistics and do not update SA's running statistics [ours]. The uncertainty weighting of
    the three branch losses is the submodule ``loss_weighting``, so torchreid's optimizer and
    checkpoints include its ``log_vars``. A branch switched off in ``dcal`` (``use_glca``,
    ``use_pwca``; ablations) has no BNNeck, classifier or output: without GLCA, or with the core's
    ``sa_only_inference``, the retrieval feature is SA's ``[B, C]``.

    Args:
        dcal (DCALModel): the backbone with its branches (``DCALViT``; ``DCALSwin``: SA and PWCA), built with
            ``num_classes=0``.
        num_classes (int): number of training identities (torchreid's ``FeatureExtractor`` builds with
            1: its classifier is never used, only the retrieval feature).
        log_var_bounds (tuple[float, float] | None): box of the uncertainty log-variances, as
            :class:`~dcal_plugin.core.UncertaintyWeightedLoss`. Defaults to ``(-2.0, 2.0)``.
        retrieval_norm (str): ``'each'`` (L2-normalise SA's and GLCA's half of the retrieval
            feature separately) or ``'concat'`` (the concatenation). Defaults to ``'each'`` [ours].
    """

    def __init__(self, dcal: DCALModel, num_classes: int,
                 log_var_bounds: Optional[Tuple[float, float]] = LOG_VAR_BOUNDS, retrieval_norm: str = 'each') -> None:
        super().__init__()
        if retrieval_norm not in RETRIEVAL_NORMS:
            raise ValueError(f'retrieval_norm must be one of {RETRIEVAL_NORMS}, got {retrieval_norm!r}')
        if dcal.vit.num_classes != 0:
            raise ValueError(f'DCALReID adds its own ID classifiers: build the core model with num_classes=0, '
                             f'got {dcal.vit.num_classes}')
        if num_classes < 1:
            raise ValueError(f'num_classes (training identities) must be >= 1, got {num_classes}')
        width = dcal.vit.num_features
        self.dcal = dcal
        self.num_classes = num_classes
        self.retrieval_norm = retrieval_norm
        self.sa_bnneck = BNNeck(width)
        self.sa_classifier = nn.Linear(width, num_classes, bias=False)
        nn.init.normal_(self.sa_classifier.weight, std=0.001)
        if dcal.use_glca:
            self.glca_bnneck = BNNeck(width)
            self.glca_classifier = nn.Linear(width, num_classes, bias=False)
            nn.init.normal_(self.glca_classifier.weight, std=0.001)
        self.loss_weighting = UncertaintyWeightedLoss(num_tasks=len(BRANCHES), log_var_bounds=log_var_bounds)

    @property
    def feature_dim(self) -> int:
        """C, the width of one branch's feature; the retrieval feature has ``2C`` (``C`` without GLCA)."""
        return self.dcal.vit.num_features

    @property
    def retrieval_features(self) -> Tuple[str, ...]:
        """The branches whose features make up the retrieval feature, in order."""
        return ('sa', 'glca') if self.dcal.use_glca and not self.dcal.sa_only_inference else ('sa',)

    def forward(self, x: Tensor, distractor_index: Optional[Tensor] = None,
                branch_outputs: bool = False) -> Union[DCALOutput, Tensor]:
        """Images ``[B, 3, H, W]`` -> train: :class:`DCALOutput` (features ``[B, C]``, logits ``[B, K]``); eval:
        ``[B, 2C]``."""
        if self.training and not branch_outputs:
            raise TypeError(
                'DCALReID in train mode returns the features and ID logits of SA, GLCA and PWCA, not the logits '
                '(softmax) or (logits, features) (triplet) that torchreid\'s ImageSoftmaxEngine and '
                'ImageTripletEngine expect: train it with dcal_plugin.torchreid.DCALEngine, which calls '
                'model(imgs, branch_outputs=True); in eval mode it returns the retrieval feature')
        out = self.dcal(x, distractor_index)
        if not self.training:
            return self.retrieval_feature(out)
        glca_logits = pwca_logits = None
        if out.glca_feature is not None:
            glca_logits = self.glca_classifier(self.glca_bnneck(out.glca_feature))
        if out.pwca_feature is not None:
            pwca_logits = self.sa_classifier(self.sa_bnneck.normalize_with_batch_statistics(out.pwca_feature))
        return DCALOutput(
            sa_feature=out.sa_feature, glca_feature=out.glca_feature, pwca_feature=out.pwca_feature,
            sa_logits=self.sa_classifier(self.sa_bnneck(out.sa_feature)), glca_logits=glca_logits,
            pwca_logits=pwca_logits, local_query_index=out.local_query_index)

    def retrieval_feature(self, out: DCALOutput) -> Tensor:
        """SA ‖ GLCA features before BNNeck ``[B, 2C]`` (``[B, C]``: SA alone), L2-normalised per ``retrieval_norm``.

        Float32 in every precision: torchreid's evaluation takes the distances to numpy.
        """
        halves = [getattr(out, f'{name}_feature').float() for name in self.retrieval_features]
        if self.retrieval_norm == 'each':
            return torch.cat([F.normalize(half, dim=-1) for half in halves], dim=-1)
        return F.normalize(torch.cat(halves, dim=-1), dim=-1)


def build_dcal_reid(
        model_name: str,
        num_classes: int,
        img_size: Union[int, Tuple[int, int]] = (256, 128),
        checkpoint_path: Optional[str] = None,
        local_query_ratio: float = REID_LOCAL_QUERY_RATIO,
        drop_path_rate: float = REID_DROP_PATH_RATE,
        log_var_bounds: Optional[Tuple[float, float]] = LOG_VAR_BOUNDS,
        pretrained: Union[bool, str] = False,
        retrieval_norm: str = 'each',
        **kwargs,
) -> DCALReID:
    """DCALReID on timm's ``model_name`` at ``img_size`` (H, W), optionally from a local timm checkpoint.

    ``local_query_ratio`` defaults to the paper's Re-ID R = 30%, ``drop_path_rate`` to TransReID's
    0.1; ``log_var_bounds`` and ``retrieval_norm`` go to :class:`DCALReID`; ``pretrained=True`` loads timm's weights of
    the paper's Re-ID tag (:data:`~dcal_plugin.core.REID_PRETRAINED_TAGS`, through timm's hub as
    ``DCALViT.from_timm``), a string another tag, ``checkpoint_path`` a local file. ``kwargs`` are
    DCAL's other options, by the names and with the defaults of :class:`~dcal_plugin.core.DCALViT`
    (``use_glca``, ``use_pwca``, ``query_selection``, ...; a Swin model needs ``use_glca=False``, see
    :func:`~dcal_plugin.core.families.dcal_from_timm`), then ``timm.create_model``'s (e.g. ``depth``).
    [ours] Position embeddings are resized to ``img_size`` by timm's checkpoint filter
    (bicubic; TransReID resizes bilinearly).
    """
    if pretrained is True:
        pretrained = paper_pretrained_tag(model_name, 'reid') or True
    dcal = dcal_from_timm(
        model_name, checkpoint_path=checkpoint_path, img_size=img_size, num_classes=0, pretrained=pretrained,
        local_query_ratio=local_query_ratio, drop_path_rate=drop_path_rate, **kwargs)
    return DCALReID(dcal, num_classes, log_var_bounds=log_var_bounds, retrieval_norm=retrieval_norm)
