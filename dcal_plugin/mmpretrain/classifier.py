"""``DCALClassifier``: mmpretrain's ``ImageClassifier`` whose head classifies exactly the backbone's branches."""
from typing import Union

from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from torch import nn

from .head import DCALClsHead


@MODELS.register_module()
class DCALClassifier(ImageClassifier):
    """``ImageClassifier`` that builds the :class:`DCALClsHead` with the backbone's ``use_glca``.

    A switch set on the backbone alone (``--cfg-options model.backbone.use_glca=False``) so also
    removes GLCA's classifier from the head: every parameter gets a gradient in every step, which
    DistributedDataParallel needs without ``find_unused_parameters`` (an unused ``glca_fc`` stops
    it at the second iteration). Arguments are ``ImageClassifier``'s; a head given as a module
    must already match the backbone.
    """

    def __init__(self, backbone: Union[dict, nn.Module], head: Union[dict, nn.Module], **kwargs) -> None:
        if not isinstance(backbone, nn.Module):
            backbone = MODELS.build(backbone)
        use_glca = backbone.dcal.use_glca
        if isinstance(head, dict) and _builds_dcal_head(head):
            head = dict(head, use_glca=use_glca)
        elif isinstance(head, DCALClsHead) and (head.glca_fc is not None) != use_glca:
            raise ValueError(f'the head was built with use_glca={not use_glca}, the backbone with use_glca={use_glca}')
        super().__init__(backbone=backbone, head=head, **kwargs)


def _builds_dcal_head(head: dict) -> bool:
    """Whether a head config builds a :class:`DCALClsHead` (its ``type`` a registered name or a class)."""
    head_type = MODELS.get(head['type']) if isinstance(head['type'], str) else head['type']
    return isinstance(head_type, type) and issubclass(head_type, DCALClsHead)
