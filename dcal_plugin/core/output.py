"""The named outputs of a DCAL forward pass, and the predictions the paper makes from them (METHOD §6)."""
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

BRANCHES = ('sa', 'glca', 'pwca')  # DCAL's three branches, in the order of DCALOutput's fields and of the losses


class DCALOutput(NamedTuple):
    """Branch outputs: features ``[B, C]``, logits ``[B, K]``.

    SA's and PWCA's feature is their final normed class token; GLCA's is its norm of the mean of
    its R local queries' outputs (METHOD §3).

    ``pwca_*`` are None in eval mode (PWCA only trains) and without PWCA (``use_pwca=False``);
    ``*_logits`` are None for a model built with ``num_classes=0``; ``glca_*`` and
    ``local_query_index`` are None in SA-only inference and without GLCA (``use_glca=False``).
    ``local_query_index`` ``[B, R]`` holds the patch positions (0-based, row-major on the patch
    grid) of GLCA's local queries.

    A ``NamedTuple``, so that ``nn.DataParallel`` (torchreid's ``scripts/main.py`` wraps every
    model in it on GPUs) gathers the replicas' outputs field by field; None fields stay None.
    """

    sa_feature: Tensor
    glca_feature: Optional[Tensor] = None
    pwca_feature: Optional[Tensor] = None
    sa_logits: Optional[Tensor] = None
    glca_logits: Optional[Tensor] = None
    pwca_logits: Optional[Tensor] = None
    local_query_index: Optional[Tensor] = None

    @property
    def fgvc_prediction(self) -> Tensor:
        """FGVC class scores ``[B, K]``: :func:`fused_scores` of SA's and GLCA's logits (SA's alone without GLCA)."""
        if self.sa_logits is None:
            raise ValueError('the model was built with num_classes=0: there are no class scores')
        return fused_scores(self.sa_logits, self.glca_logits)[0]

    @property
    def reid_feature(self) -> Tensor:
        """Re-ID retrieval feature ``cat([sa_feature, glca_feature], -1)`` ``[B, 2C]`` (``[B, C]`` without GLCA)."""
        if self.glca_feature is None:
            return self.sa_feature
        return torch.cat([self.sa_feature, self.glca_feature], dim=-1)


def fused_scores(sa_logits: Tensor, glca_logits: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The paper's FGVC prediction (METHOD §6) ``[B, K]`` and the branch probabilities ``{'sa', 'glca': [B, K]}``.

    The paper adds ``softmax(z_SA) + softmax(z_GLCA)`` and takes the argmax; the scores here are that
    sum halved, so that they stay a distribution (same argmax); SA's probabilities alone without
    GLCA. Float32 in every precision (toolboxes take scores to numpy).
    """
    branches = {'sa': sa_logits.float().softmax(dim=-1)}
    if glca_logits is not None:
        branches['glca'] = glca_logits.float().softmax(dim=-1)
    return torch.stack(list(branches.values())).mean(dim=0), branches
