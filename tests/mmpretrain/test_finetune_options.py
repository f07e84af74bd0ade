"""mmpretrain's fine-tuning options through mmengine's Runner: layer-wise lr decay, frozen_stages, stock heads."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmpretrain.registry import MODELS

import dcal_plugin.mmpretrain  # noqa: F401

from .conftest import small_config

SMALL = dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', img_size=32, patch_size=8, depth=2)


def quick_config(digits_roots, work_dir):
    """The small config (2 blocks, GLCA beside block 1), one epoch, no rollout pictures."""
    cfg = small_config(digits_roots['cub'], work_dir)
    cfg.custom_hooks = [hook for hook in cfg.custom_hooks if hook['type'] != 'AttentionRolloutHook']
    return cfg


class RecordWeights(Hook):
    """The backbone's weights before training, and the training flags of its modules at every iteration."""

    def __init__(self):
        self.initial, self.modes = {}, []

    def before_train(self, runner):
        self.initial = {name: value.clone() for name, value in runner.model.backbone.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.modes.append({name: module.training for name, module in runner.model.backbone.named_modules()})


def test_layer_wise_lr_decay_through_the_runner(digits_roots, tmp_path):
    """mmpretrain's constructor, rate 0.5 over L + 2 = 4 depths: the head gets lr, block i 0.5^(2-i), GLCA block 1's."""
    cfg = quick_config(digits_roots, tmp_path)
    cfg.optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                             constructor='LearningRateDecayOptimWrapperConstructor',
                             paramwise_cfg=dict(layer_decay_rate=0.5))
    runner = RUNNERS.build(cfg)
    runner.train()
    groups = {group['param_name']: group for group in runner.optim_wrapper.optimizer.param_groups}
    expected = {'backbone.dcal.vit.cls_token': 0.125, 'backbone.dcal.vit.pos_embed': 0.125,
                'backbone.dcal.vit.patch_embed.proj.weight': 0.125, 'backbone.dcal.vit.blocks.0.attn.qkv.weight': 0.25,
                'backbone.dcal.vit.blocks.1.mlp.fc2.bias': 0.5, 'backbone.dcal.glca_block.attn.qkv.weight': 0.5,
                'backbone.dcal.glca_block.norm1.weight': 0.5, 'backbone.dcal.vit.norm.weight': 1.0,
                'backbone.dcal.glca_norm.bias': 1.0, 'head.sa_fc.weight': 1.0, 'head.loss_weighting.log_vars': 1.0}
    head_lr = groups['head.sa_fc.weight']['lr']
    for name, scale in expected.items():
        assert groups[name]['lr_scale'] == pytest.approx(scale), name
        assert groups[name]['lr'] == pytest.approx(scale * head_lr), name  # the scheduler kept the ratios
    assert len(groups) == len(list(runner.model.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize('frozen_stages', [1, 2])
def test_frozen_stages_through_the_runner(digits_roots, tmp_path, frozen_stages):
    """Embedding and first blocks stay as initialised and in eval mode; GLCA (beside block 1) freezes with block 1."""
    cfg = quick_config(digits_roots, tmp_path)
    cfg.model.backbone.frozen_stages = frozen_stages
    record = RecordWeights()
    runner = RUNNERS.build(cfg)
    runner.register_hook(record)
    runner.train()
    frozen = ['dcal.vit.cls_token', 'dcal.vit.pos_embed', 'dcal.vit.patch_embed.', 'dcal.vit.blocks.0.']
    trained = ['dcal.vit.blocks.1.', 'dcal.glca_block.', 'dcal.vit.norm.', 'dcal.glca_norm.']
    if frozen_stages == 2:
        frozen, trained = frozen + trained, []
    for name, value in runner.model.backbone.state_dict().items():
        if name.startswith(tuple(frozen)):
            assert torch.equal(value, record.initial[name]), name
        elif name.startswith(tuple(trained)) and name.endswith('weight'):
            assert not torch.equal(value, record.initial[name]), name
    modes = record.modes[-1]
    assert modes[''] and modes['dcal.vit.blocks.1'] == (frozen_stages == 1)
    assert not modes['dcal.vit.blocks.0'] and not modes['dcal.vit.patch_embed'] and not modes['dcal.vit.pos_drop']
    assert modes['dcal.glca_block'] == modes['dcal.glca_norm'] == (frozen_stages == 1)


def test_frozen_stages_beyond_the_depth_and_out_indices_are_refused():
    with pytest.raises(ValueError, match='frozen_stages must be at most the depth 2'):
        MODELS.build(dict(SMALL, frozen_stages=3))
    with pytest.raises(ValueError, match=r"out_indices not supported: .*normed class token \(sa, glca, pwca\)"):
        MODELS.build(dict(SMALL, out_indices=[0, 1]))


@pytest.mark.slow
@pytest.mark.parametrize('head, compile_backend', [
    ('LinearClsHead', None), ('VisionTransformerClsHead', None), ('LinearClsHead', 'aot_eager')])
def test_a_stock_head_is_refused_at_its_first_step(digits_roots, tmp_path, head, compile_backend):
    """mmpretrain's heads classify feats[-1] (PWCA in training): refused with DCALClsHead named, before any step."""
    cfg = quick_config(digits_roots, tmp_path)
    cfg.model.head = dict(type=head, num_classes=10, in_channels=192)
    if compile_backend:
        cfg.compile = dict(backend=compile_backend)
    runner = RUNNERS.build(cfg)
    with pytest.raises(TypeError, match=r"feats\[-1\] is PWCA's feature in training.*type='DCALClsHead'"):
        runner.train()
    assert runner.iter == 0 and not list(tmp_path.glob('*.pth'))


def test_branch_features_read_by_name_position_and_through_extract_feat():
    classifier = MODELS.build(dict(type='ImageClassifier', backbone=SMALL,
                                   head=dict(type='DCALClsHead', num_classes=10, in_channels=192))).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = classifier.extract_feat(images, stage='backbone')
        assert features.sa is features[0] and features.glca is features[1] and features.pwca is None
        sa, glca, _ = features
        pre_logits = classifier.extract_feat(images, stage='pre_logits')
    torch.testing.assert_close(pre_logits, torch.cat([sa, glca], dim=-1))
