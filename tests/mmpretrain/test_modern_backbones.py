"""The ViTs beyond the paper train through MMPretrain's Runner on the digits data: DINOv2 with registers, CLIP,
distilled DeiT (two blocks, small images); their checkpoints test with GLCA's queries among the patches only."""
import pytest
import torch
from mmengine.registry import RUNNERS

from .conftest import small_config

MODELS = {  # timm name: (width, image size: a 2 x 2 patch grid)
    'vit_small_patch14_reg4_dinov2': (384, 28),
    'vit_base_patch16_clip_224': (768, 32),
    'deit_tiny_distilled_patch16_224': (192, 32),
}


@pytest.mark.slow
@pytest.mark.parametrize('model_name', MODELS)
def test_trains_and_tests_through_the_runner(digits_roots, tmp_path, model_name):
    width, size = MODELS[model_name]
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.model.backbone.pop('patch_size')  # the demo model's 8-pixel patches: the family's own here
    cfg.model.backbone.update(model_name=model_name, img_size=size, depth=2, local_query_ratio=0.5)
    cfg.model.head.in_channels = width
    cfg.train_pipeline[1] = dict(type='RandomCrop', crop_size=size, padding=2)
    cfg.test_pipeline[1] = dict(type='Resize', scale=(size, size))
    for loader, pipeline in (('train_dataloader', cfg.train_pipeline), ('val_dataloader', cfg.test_pipeline)):
        cfg[loader].dataset.pipeline = pipeline
    cfg.test_dataloader = cfg.val_dataloader
    runner = RUNNERS.build(cfg)
    runner.train()
    assert runner.iter == 5
    metrics = runner.test()
    assert 0 <= metrics['accuracy/top1'] <= 100 and 'dcal/glca_top1' in metrics
    dcal = runner.model.backbone.dcal
    with torch.no_grad():
        out = dcal.eval()(torch.randn(2, 3, size, size))
    assert out.local_query_index.max() < 4  # a patch of the 2 x 2 grid, never a prefix token


def test_a_dynamic_backbone_serves_mmpretrains_inferencer_at_any_size_without_a_resize(digits_roots, tmp_path):
    import numpy as np
    from mmpretrain import ImageClassificationInferencer

    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    cfg.model.backbone.update(dynamic_img_size=True)
    cfg.test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]  # no Resize: any size
    cfg.val_dataloader.dataset.pipeline = cfg.test_pipeline
    cfg.test_dataloader = cfg.val_dataloader
    RUNNERS.build(cfg).train()
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=str(tmp_path / 'work' / 'epoch_1.pth'))
    rng = np.random.default_rng(0)
    for height, width in ((32, 32), (48, 24), (64, 40)):  # 8-pixel patches
        [result] = inferencer(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        assert 0 <= result['pred_label'] < 10 and 0 < result['pred_score'] <= 1
