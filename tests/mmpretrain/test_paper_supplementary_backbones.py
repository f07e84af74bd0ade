"""The paper's supplementary backbones (METHOD §9) train through MMPretrain's Runner on the digits data: Swin-T with
PWCA only and CaiT-XS24 with DCAL (a stage or a few blocks, small images)."""
import pytest
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from dcal_plugin.mmpretrain import draw_rollouts

from .conftest import small_config

MODELS = {  # name: (backbone options, feature width, image size)
    'swin': (dict(model_name='swin_tiny_patch4_window7_224', use_glca=False, depths=(1, 1), num_heads=(3, 6),
                  embed_dim=24, window_size=4), 48, 32),  # 8 x 8 tokens in 4 x 4 windows, then 4 x 4
    'cait': (dict(model_name='cait_xs24_384', depth=2, embed_dim=48, num_heads=3, patch_size=8,
                  local_query_ratio=0.25), 48, 32),  # 4 x 4 patches, 2 talking-heads and 2 class-attention blocks
}


def family_config(digits_roots, tmp_path, name):
    """The small digits config with the family's reduced backbone."""
    options, width, size = MODELS[name]
    cfg = small_config(digits_roots['cub'], tmp_path / 'work')
    for option in ('patch_size', 'depth'):  # the demo ViT's: the family's own here
        cfg.model.backbone.pop(option)
    cfg.model.backbone.update(img_size=size, **options)
    cfg.model.head.in_channels = width
    return cfg


def build_runner(digits_roots, tmp_path, name):
    return RUNNERS.build(family_config(digits_roots, tmp_path, name))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['swin', 'cait'])
def test_two_gloo_processes_train_each_family_to_identical_weights(digits_roots, tmp_path, name):
    from .test_resume_and_distributed import train_on_two_gloo_processes

    rank0, _ = train_on_two_gloo_processes(family_config(digits_roots, tmp_path, name), tmp_path)
    assert any('glca' in key for key in rank0) == (name == 'cait')  # every parameter trained: DDP's reduction ran


def test_swin_trains_pwca_only_and_tests_through_the_runner(digits_roots, tmp_path):
    runner = build_runner(digits_roots, tmp_path, 'swin')
    losses = []
    runner.register_hook(LossRecorder(losses), priority='LOWEST')
    runner.train()
    assert runner.iter == 5 and runner.model.head.glca_fc is None
    assert {'loss_sa', 'loss_pwca'} <= set(losses[0]) and 'loss_glca' not in losses[0]
    metrics = runner.test()
    assert 0 <= metrics['accuracy/top1'] <= 100 and 'dcal/glca_top1' not in metrics
    assert not list((tmp_path / 'work').rglob('rollout_*.png'))  # no rollout to draw
    with pytest.raises(ValueError, match='no attention rollout'):
        draw_rollouts(runner.model, [runner.val_dataloader.dataset[0]])


def test_swin_refuses_glca(digits_roots, tmp_path):
    MODELS['swin_with_glca'] = (dict(MODELS['swin'][0], use_glca=True), 48, 32)
    try:
        with pytest.raises(ValueError, match='use_glca=False'):
            build_runner(digits_roots, tmp_path, 'swin_with_glca')
    finally:
        del MODELS['swin_with_glca']


class LossRecorder(Hook):
    """A hook recording each training iteration's logged outputs."""

    def __init__(self, records):
        self.records = records

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.records.append({key: float(value) for key, value in outputs.items()})


def test_cait_trains_all_three_branches_and_tests_through_the_runner(digits_roots, tmp_path):
    runner = build_runner(digits_roots, tmp_path, 'cait')
    losses = []
    runner.register_hook(LossRecorder(losses), priority='LOWEST')
    runner.train()
    assert runner.iter == 5 and type(runner.model.backbone.dcal).__name__ == 'DCALCaiT'
    assert {'loss_sa', 'loss_glca', 'loss_pwca'} <= set(losses[0])
    metrics = runner.test()
    assert 0 <= metrics['accuracy/top1'] <= 100 and 'dcal/glca_top1' in metrics
    assert list((tmp_path / 'work').rglob('rollout_*.png'))  # the class token's rollout, drawn
    [picture] = draw_rollouts(runner.model, [runner.val_dataloader.dataset[0]])
    assert picture.shape == (32, 3 * 32 + 8, 3)


@pytest.mark.parametrize('config, reduced', [
    ('dcal_deit-tiny_cub.py', dict(depth=1, img_size=32)),
    ('dcal_dinov2-small-reg4_cub.py', dict(depth=1, img_size=28)),  # LayerScale, 4 registers
    ('dcal_swin-tiny_cub.py', dict(depths=(1, 1, 1, 1), img_size=64)),  # relative position bias tables
    ('dcal_cait-xs24_cub.py', dict(depth=1, img_size=32)),  # CaiT's layer scales gamma_1, gamma_2
])
def test_the_fgvc_recipe_decays_the_backbone_as_timms_optimizer_factory(config, reduced):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from timm.optim._param_groups import param_groups_weight_decay

    from .conftest import REPO

    cfg = Config.fromfile(str(REPO / 'configs' / config))
    cfg.model.backbone.update(checkpoint_path=None, **reduced)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    vit = model.backbone.dcal.vit
    undecayed = {id(parameter) for group in optimizer.param_groups if group['weight_decay'] == 0
                 for parameter in group['params']}
    names = {id(parameter): name for name, parameter in vit.named_parameters()}
    ours = {names[key] for key in undecayed if key in names}
    [timms_undecayed, _] = param_groups_weight_decay(vit, 0.05, no_weight_decay_list=vit.no_weight_decay())
    assert timms_undecayed['weight_decay'] == 0
    assert ours == {names[id(parameter)] for parameter in timms_undecayed['params']}
