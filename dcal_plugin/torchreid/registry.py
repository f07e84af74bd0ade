"""Adding DCAL's model names to torchreid's model factory, and VeRi-776 and MSMT17 train + val to its image datasets."""
import functools
from types import ModuleType
from typing import Callable, Dict, Tuple

import torchreid

from .datasets import MSMT17TrainVal, VeRi776
from .model import DCALReID, build_dcal_reid

# torchreid model name -> timm model name.
MODEL_NAMES = {
    'dcal_deit_tiny': 'deit_tiny_patch16_224',
    'dcal_deit_small': 'deit_small_patch16_224',
    'dcal_deit_base': 'deit_base_patch16_224',
    'dcal_vit_base': 'vit_base_patch16_224',
    'dcal_r50_vit_base': 'vit_base_r50_s16_224',
}
# build_model names: each model at torchreid's default 256x128 under its own name, and at the paper's VeRi-776
# size as NAME_256x256 (build_dcal_reid builds any other size)
FACTORY_SIZES = {'': (256, 128), '_256x256': (256, 256)}
FACTORY_NAMES = {f'{name}{suffix}': (timm_name, size)
                 for name, timm_name in MODEL_NAMES.items() for suffix, size in FACTORY_SIZES.items()}
DATASETS = {'veri776': VeRi776, 'msmt17_trainval': MSMT17TrainVal}
_FACTORY_NAME = '__model_factory'


def model_factory(models_module: ModuleType) -> Dict[str, Callable]:
    """The module-level dict ``__model_factory`` that ``build_model`` of torchreid's ``models`` module reads.

    torchreid has no function to register a model; this is the single place that reaches into
    its layout, and it fails with a clear message when that layout has changed.
    """
    factory = vars(models_module).get(_FACTORY_NAME)
    if not isinstance(factory, dict) or not callable(getattr(models_module, 'build_model', None)):
        raise RuntimeError(
            f'torchreid\'s layout has changed: {models_module.__name__} has no dict {_FACTORY_NAME!r} beside '
            'build_model, so the DCAL models cannot be registered; build them with '
            'dcal_plugin.torchreid.build_dcal_reid instead')
    return factory


def timm_model_name(name: str) -> str:
    """The timm model behind a torchreid model name of :data:`MODEL_NAMES`."""
    if name not in MODEL_NAMES:
        raise ValueError(f'unknown DCAL model {name!r}; choose one of {", ".join(MODEL_NAMES)}')
    return MODEL_NAMES[name]


def register_models(models_module: ModuleType = torchreid.models) -> None:
    """Make ``torchreid.models.build_model(name, ...)`` build every name of :data:`FACTORY_NAMES`."""
    factory = model_factory(models_module)
    factory.update({name: functools.partial(_build_from_factory, timm_name, img_size)
                    for name, (timm_name, img_size) in FACTORY_NAMES.items()})


def register_datasets() -> None:
    """Register :data:`DATASETS` with torchreid's ``register_image_dataset`` (once per process)."""
    for name, dataset in DATASETS.items():
        torchreid.data.register_image_dataset(name, dataset)


def _build_from_factory(
        model_name: str, img_size: Tuple[int, int], num_classes: int, loss: str = 'softmax', pretrained: bool = True,
        use_gpu: bool = True,
) -> DCALReID:
    """``build_model``'s call: a DCALReID at ``img_size`` (H, W), with timm's pretrained weights by default.

    ``pretrained=True`` (torchreid's default) loads timm's weights of the paper's Re-ID tag through timm's
    hub mechanism (see ``build_dcal_reid``). The train output serves :class:`DCALEngine` whatever
    ``loss`` says (``weight_t=0`` there is the softmax-only setting); ``use_gpu`` is accepted as
    torchreid passes it, and the caller moves the model.
    """
    if loss not in ('softmax', 'triplet'):
        raise ValueError(f'DCAL models train with DCALEngine (cross-entropy, plus triplet unless its weight_t=0): '
                         f'loss must be "softmax" or "triplet", got {loss!r}')
    return build_dcal_reid(model_name, num_classes, img_size=img_size, pretrained=pretrained)
