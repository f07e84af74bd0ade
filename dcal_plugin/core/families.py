"""The DCAL model for a timm model name: ``DCALViT`` (ViT, DeiT, hybrids, DINOv2, CLIP), ``DCALSwin``, ``DCALCaiT``."""
from typing import Any, Dict, Type

import timm
from timm.models import model_entrypoint

from .dcal_cait import DCALCaiT
from .dcal_model import DCALModel
from .dcal_swin import DCALSwin
from .dcal_vit import DCALViT

# timm modules whose models another DCAL class wraps; every other model goes to DCALViT, which says what it refuses
_FAMILIES: Dict[str, Type[DCALModel]] = {'timm.models.swin_transformer': DCALSwin, 'timm.models.cait': DCALCaiT}
# DCALViT's options that only act on GLCA (and its rollout)
_GLCA_OPTIONS = ('local_query_ratio', 'glca_block_index', 'residual_weight', 'sa_only_inference', 'query_selection')


def dcal_family(model_name: str) -> Type[DCALModel]:
    """The DCAL class that wraps timm's ``model_name``."""
    if not timm.is_model(model_name):  # DCALViT.from_timm says so, with similar names
        return DCALViT
    return _FAMILIES.get(model_entrypoint(model_name).__module__, DCALViT)


def dcal_from_timm(model_name: str, **kwargs: Any) -> DCALModel:
    """``from_timm`` of :func:`dcal_family` (``model_name``), taking every adapter's options (``DCALViT``'s names).

    The adapters pass all of ``DCALViT``'s options. A family without GLCA (Swin: the paper runs PWCA
    alone) needs ``use_glca=False``, and then takes none of GLCA's options, as ``DCALViT`` with
    ``use_glca=False`` ignores them; any other option the family lacks must keep ``DCALViT``'s
    default. Anything else raises one ``ValueError`` naming the options.
    """
    family = dcal_family(model_name)
    if family is DCALViT:
        return DCALViT.from_timm(model_name, **kwargs)
    options, vit_options = family.option_defaults(), DCALViT.option_defaults()
    if 'use_glca' not in options:
        if kwargs.get('use_glca', False):
            raise ValueError(f'{model_name} runs DCAL without GLCA ({family.__name__}: the paper trains it with PWCA '
                             'alone): set use_glca=False')
        for name in ('use_glca', *_GLCA_OPTIONS):
            kwargs.pop(name, None)
    changed = [name for name in vit_options if name not in options and name in kwargs
               and kwargs[name] != vit_options[name]]
    if changed:
        raise ValueError(f'{family.__name__} ({model_name}) has no option {", ".join(changed)}')
    return family.from_timm(model_name, **{name: value for name, value in kwargs.items()
                                           if name in options or name not in vit_options})


