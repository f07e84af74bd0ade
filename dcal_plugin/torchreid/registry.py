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
    'dcal_swin_tiny': 'swin_tiny_patch4_window7_224',  # the paper's supplementary row: PWCA only (use_glca=False)
    # beyond the paper (dcal_plugin.core.BEYOND_PAPER_TAGS)
    'dcal_dinov2_small_reg4': 'vit_small_patch14_reg4_dinov2',
    'dcal_dinov2_base_reg4': 'vit_base_patch14_reg4_dinov2',
    'dcal_dinov2_small': 'vit_small_patch14_dinov2',
    'dcal_dinov2_base': 'vit_base_patch14_dinov2',
    'dcal_clip_base': 'vit_base_patch16_clip_224',
    'dcal_deit_tiny_distilled': 'deit_tiny_distilled_patch16_224',
    'dcal_deit_small_distilled': 'deit_small_distilled_patch16_224',
    'dcal_deit_base_distilled': 'deit_base_distilled_patch16_224',
}
# build_model names: each model on the paper's person grid, 16x8 patches (torchreid's default 256x128 for patch 16,
# 224x112 for DINOv2's patch 14), under its own name, and on the paper's VeRi-776 grid, 16x16 patches, as NAME_HxW
# (NAME_256x256, NAME_224x224). Built with timm's dynamic_img_size: each takes any size a data manager gives
# (a ViT's position embeddings interpolated as timm does; Swin-T, at the same pixel sizes, builds its masks per input
# and keeps the window sizes of the size it was built at); build_dcal_reid builds any other size.
FACTORY_GRIDS = {'': (16, 8), 'square': (16, 16)}
FACTORY_NAMES = {
    f'{name}_{16 * stride}x{16 * stride}' if kind else name: (timm_name, (grid[0] * stride, grid[1] * stride))
    for name, timm_name in MODEL_NAMES.items() for stride in [14 if 'patch14' in timm_name else 16]
    for kind, grid in FACTORY_GRIDS.items()}
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
    """``build_model``'s call: a DCALReID built at ``img_size`` (H, W), taking any size, with timm's pretrained weights
    by default.

    ``pretrained=True`` (torchreid's default) loads timm's weights of the paper's Re-ID tag through timm's
    hub mechanism (see ``build_dcal_reid``). The train output serves :class:`DCALEngine` whatever
    ``loss`` says (``weight_t=0`` there is the softmax-only setting); ``use_gpu`` is accepted as
    torchreid passes it, and the caller moves the model.
    """
    if loss not in ('softmax', 'triplet'):
        raise ValueError(f'DCAL models train with DCALEngine (cross-entropy, plus triplet unless its weight_t=0): '
                         f'loss must be "softmax" or "triplet", got {loss!r}')
    return build_dcal_reid(model_name, num_classes, img_size=img_size, pretrained=pretrained, dynamic_img_size=True)
