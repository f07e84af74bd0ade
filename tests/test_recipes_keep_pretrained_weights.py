"""Every shipped paper recipe keeps pretrained weights: its optimizer and schedule over noise gradients, full length.

Each paper config's optimizer and learning-rate schedule are built as its toolbox builds them
(mmengine's optimizer wrapper, ``auto_scale_lr`` and param schedulers; the torchreid yaml through
``tools/train_reid.py``'s builders) on a narrow stand-in model of the config's depth whose weight
matrices are drawn like a pretrained ViT's (std 0.02), then run for the recipe's epochs with
N(0, 1e-4²) noise as every gradient (``dcal_plugin.recipe_check``). Configs whose recipe is the same
but for the data set share one simulation, at the most iterations per epoch among their paper data
sets: the decay a recipe applies grows with its steps, so that data set bounds the others.

- FGVC (AdamW): no block weight may lose more than 5% of its norm at any epoch. torch's
  ``Adam(weight_decay=0.05)``, which the FGVC recipe used before, keeps 18% after 10 CUB epochs.
- Every recipe: no block weight may lose more than 5% beyond its nominal weight decay (what the
  decay leaves of a weight its gradient holds). TransReID's SGD recipe (momentum 0.9, coupled decay
  1e-4) itself takes 10-25% over 120 epochs from a weight no gradient holds: plain L2, undone by a
  gradient of 1e-3·|w|, where coupled Adam's is normalised into ~lr per step.
"""
import math
from pathlib import Path

import pytest

from dcal_plugin.layouts import OFFICIAL_TRAIN_IMAGES
from dcal_plugin.recipe_check import KEPT_NORM, make_pretrained_like_, norm_retention

pytestmark = pytest.mark.slow  # each paper recipe simulated over its whole schedule

REPO = Path(__file__).resolve().parents[1]
FGVC_CONFIGS = sorted(p for p in (REPO / 'configs').glob('dcal_*.py') if 'digits' not in p.name)
REID_CONFIGS = sorted(p for p in (REPO / 'configs' / 'reid').glob('dcal_*.yaml') if 'digits' not in p.name)


def longest_epoch_per_recipe(configs):
    """``[(signature, iterations per epoch, cfg, path)]`` -> {signature: (cfg of the longest epoch, [paths], its
    iterations)}."""
    recipes = {}
    for signature, iterations, cfg, path in configs:
        recipes.setdefault(signature, []).append((iterations, cfg, path))
    return {signature: (max(members, key=lambda member: member[0])[1], [path for _, _, path in members],
                        max(iterations for iterations, _, _ in members))
            for signature, members in recipes.items()}


def fgvc_recipes():
    """The FGVC paper configs by recipe (all but the data set), each simulated at its longest paper epoch."""
    from mmengine.config import Config
    configs = []
    for path in FGVC_CONFIGS:
        cfg = Config.fromfile(str(path))
        backbone = cfg.model.backbone
        signature = repr([cfg.optim_wrapper, cfg.param_scheduler, cfg.train_cfg, cfg.auto_scale_lr,
                          cfg.train_dataloader.batch_size, backbone.get('depth'), backbone.get('frozen_stages'),
                          backbone.get('use_glca'), backbone.get('use_pwca')])
        batch = cfg.train_dataloader.batch_size
        configs.append((signature, math.ceil(OFFICIAL_TRAIN_IMAGES[cfg.train_dataloader.dataset.type] / batch),
                        cfg, path))
    return longest_epoch_per_recipe(configs)


def reid_recipes():
    """The Re-ID paper configs by recipe (all but the data set), each simulated at its longest paper epoch."""
    from dcal_plugin.torchreid import get_default_config
    from dcal_plugin.torchreid.config import optimizer_kwargs, scheduler_kwargs
    configs = []
    for path in REID_CONFIGS:
        cfg = get_default_config()
        cfg.merge_from_file(str(path))
        signature = repr([optimizer_kwargs(cfg), scheduler_kwargs(cfg), cfg.train.batch_size, cfg.model.use_glca,
                          cfg.model.use_pwca, cfg.model.timm_kwargs.get('depth')])
        configs.append((signature, OFFICIAL_TRAIN_IMAGES[cfg.data.sources[0]] // cfg.train.batch_size, cfg, path))
    return longest_epoch_per_recipe(configs)


def check_kept(per_epoch, what, measure='of its norm'):
    worst = min(range(len(per_epoch)), key=per_epoch.__getitem__)
    assert per_epoch[worst] > KEPT_NORM, (f'{what}: a block weight keeps {per_epoch[worst]:.1%} {measure} '
                                          f'after epoch {worst + 1}')


def test_every_paper_config_is_simulated_at_its_longest_paper_epoch():
    pytest.importorskip('mmpretrain')
    pytest.importorskip('torchreid')
    fgvc, reid = fgvc_recipes(), reid_recipes()
    # the paper's rows (15 FGVC, 20 Re-ID), its supplementary's (Swin-T and CaiT-XS24 on CUB, Swin-T on MSMT17) and
    # those beyond the paper (3 on CUB, 3 on VeRi-776); Swin-T's (PWCA only) is a recipe of its own
    assert sorted(path for _, paths, _ in fgvc.values() for path in paths) == FGVC_CONFIGS and len(FGVC_CONFIGS) == 20
    assert sorted(path for _, paths, _ in reid.values() for path in paths) == REID_CONFIGS and len(REID_CONFIGS) == 24
    # Stanford Cars: 8,144 images / 16; Swin-T on CUB: 5,994 / 16
    assert sorted(iterations for _, _, iterations in fgvc.values()) == [375, 509]
    # VeRi-776: 37,778 images / 64; Swin-T on MSMT17's train + val: 32,621 / 64
    assert sorted(iterations for _, _, iterations in reid.values()) == [509, 590]


def test_fgvc_recipes_keep_pretrained_weights_over_their_whole_schedule():
    pytest.importorskip('mmpretrain')
    from dcal_plugin.mmpretrain.recipe_schedule import recipe_schedule, stand_in_model
    for cfg, paths, iterations in fgvc_recipes().values():
        model = stand_in_model(cfg)
        make_pretrained_like_(model)
        schedule = recipe_schedule(cfg, model, iterations)
        assert schedule.epochs == 100 and schedule.optimizer.param_groups[0]['lr'] < 5e-4  # the batch rule applied
        retention = norm_retention(model, schedule)
        blocks = 13 if cfg.model.backbone.get('use_glca', True) else 12  # 12 SA blocks and GLCA's (Swin-T: none)
        assert len(retention.weakest()) == 100 and len(retention.kept) == blocks * 4  # 4 matrices each
        names = ', '.join(path.name for path in paths)
        check_kept(retention.weakest(), names)
        check_kept(retention.weakest_beyond_decay(), names, 'beyond its nominal weight decay')


def test_the_check_fails_on_torchs_coupled_adam_decay():
    """The recipe before issue 22: Adam(weight_decay=0.05) shrinks the weights by about lr per step."""
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config

    from dcal_plugin.mmpretrain.recipe_schedule import recipe_schedule, stand_in_model
    cfg = Config.fromfile(str(REPO / 'configs' / 'dcal_deit-tiny_cub.py'))
    cfg.optim_wrapper.optimizer.type = 'Adam'
    model = stand_in_model(cfg)
    make_pretrained_like_(model)
    retention = norm_retention(model, recipe_schedule(cfg, model, 375), stop_below=KEPT_NORM)
    assert len(retention.weakest()) <= 5  # below 95% within the warm-up
    for per_epoch in (retention.weakest(), retention.weakest_beyond_decay()):
        with pytest.raises(AssertionError, match='keeps'):
            check_kept(per_epoch, 'Adam(weight_decay=0.05)')


def test_reid_recipes_take_no_more_than_their_weight_decay_over_their_whole_schedule():
    pytest.importorskip('torchreid')
    from dcal_plugin.torchreid.recipe_schedule import recipe_schedule, stand_in_model
    for cfg, paths, iterations in reid_recipes().values():
        model = stand_in_model(cfg)
        make_pretrained_like_(model)
        schedule = recipe_schedule(cfg, model, iterations)
        assert schedule.epochs == 120
        retention = norm_retention(model, schedule)
        assert len(retention.weakest()) == 120
        check_kept(retention.weakest_beyond_decay(), ', '.join(path.name for path in paths),
                   'beyond its nominal weight decay')


@pytest.mark.parametrize('config, optimizer, status', [
    ('dcal_deit-tiny_cub.py', None, 0), ('dcal_deit-tiny_cub.py', 'Adam', 1), ('reid/dcal_vit_veri776.yaml', None, 0)])
def test_the_check_recipe_tool_says_whether_a_config_keeps_pretrained_weights(tmp_path, capsys, config, optimizer,
                                                                              status):
    """``tools/check_recipe.py CONFIG`` on a few epochs: exit status 0 (keeps) or 1 (erases), as the verdict line
    says."""
    import importlib.util
    pytest.importorskip('mmpretrain' if config.endswith('.py') else 'torchreid')
    spec = importlib.util.spec_from_file_location('check_recipe', REPO / 'tools' / 'check_recipe.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = REPO / 'configs' / config
    if optimizer:
        path = tmp_path / 'adam.py'
        path.write_text(f"_base_ = ['{REPO / 'configs' / config}']\n"
                        f"optim_wrapper = dict(optimizer=dict(type='{optimizer}'))\n")
    assert tool.main([str(path), '--epochs', '3']) == status
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith(f'{path}: {"keeps" if status == 0 else "ERASES"} pretrained weights')
