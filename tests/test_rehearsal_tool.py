"""tools/rehearsal.py: its runs are the paper's recipes with only model, images, data and epochs shrunk; runs are
kept."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip('mmpretrain')
pytest.importorskip('torchreid')

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def rehearsal():
    spec = importlib.util.spec_from_file_location('rehearsal', ROOT / 'tools' / 'rehearsal.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_fgvc_runs_differ_from_the_paper_config_where_they_say(rehearsal, tmp_path):
    from mmengine.config import Config
    paper = Config.fromfile(str(ROOT / 'configs' / 'dcal_deit-tiny_cub.py'))
    runs = {name: rehearsal.fgvc_runner(tmp_path, tmp_path / str(index), seed=0, **settings).cfg
            for index, (name, settings) in enumerate(rehearsal.FGVC_RUNS.items())}
    recipe, scratch, adam, demo_lr = (runs['fine-tuned, the recipe'], runs['from scratch, the recipe'],
                                      runs['fine-tuned, Adam(weight_decay=0.05)'], runs["fine-tuned, the demo's lr"])
    assert recipe.optim_wrapper.optimizer == paper.optim_wrapper.optimizer  # AdamW, lr 5e-4, weight decay 0.05
    assert recipe.auto_scale_lr == paper.auto_scale_lr and recipe.train_dataloader.batch_size == 16
    assert Path(recipe.model.backbone.checkpoint_path).name == 'deit-tiny-p8-d4_digit-pairs.pth'
    assert scratch.model.backbone.checkpoint_path is None
    assert adam.optim_wrapper.optimizer.type == 'Adam' and adam.optim_wrapper.optimizer.weight_decay == 0.05
    assert demo_lr.optim_wrapper.optimizer.lr == 40 * paper.optim_wrapper.optimizer.lr


def test_the_reid_runs_scale_the_papers_recipe_down(rehearsal, tmp_path):
    from dcal_plugin.torchreid import get_default_config
    paper = get_default_config()
    paper.merge_from_file(str(ROOT / 'configs' / 'reid' / 'dcal_deit-tiny_veri776.yaml'))
    cfg = rehearsal.reid_config(tmp_path, tmp_path, pretrained=True, recipe='paper', epochs=24, seed=0)
    assert (cfg.train.optim, cfg.train.lr, cfg.train.batch_size, cfg.sampler.num_instances) == ('sgd', 0.008, 64, 4)
    assert (cfg.data.height, cfg.data.padding, cfg.train.warmup_epochs, cfg.train.max_epoch) == (32, 1, 1, 24)
    assert cfg.loss == paper.loss and cfg.data.transforms == paper.data.transforms == ['transreid']
    assert Path(cfg.model.checkpoint).name == 'deit-tiny-p8-d4_digit-pairs.pth'
    before = rehearsal.reid_config(tmp_path, tmp_path, pretrained=False, recipe='before', epochs=1, seed=0)
    assert (before.loss.softmax.label_smooth, before.loss.triplet.margin,
            before.train.bias_lr_factor) == (True, 0.3, 1.0)
    assert before.model.checkpoint == '' and before.train.warmup_epochs == 0
    demo = rehearsal.reid_config(tmp_path, tmp_path, pretrained=True, recipe='demo', epochs=24, seed=0)
    assert (demo.train.optim, demo.train.max_epoch) == ('adamw', 40)  # make demo-reid's config as it is


def test_a_finished_run_is_kept_and_a_changed_one_runs_again(rehearsal, tmp_path):
    calls = []

    def run(run_dir):
        calls.append(run_dir)
        return dict(value=len(calls))

    first = rehearsal.finished_or_run(tmp_path, dict(a=1), run)
    assert rehearsal.finished_or_run(tmp_path, dict(a=1), run)['value'] == first['value'] == 1 and len(calls) == 1
    assert rehearsal.finished_or_run(tmp_path, dict(a=2), run)['value'] == 2
    assert json.loads((tmp_path / rehearsal.FINISHED).read_text())['run_settings'] == dict(a=2)
    assert not list(tmp_path.glob('*.partial'))


def test_the_tables_show_each_runs_last_values(rehearsal):
    record = dict(test={'accuracy/top1': 66.0, 'dcal/sa_top1': 63.7, 'dcal/glca_top1': 62.7}, iterations=940,
                  drift={'blocks.0': [0.1, 0.236], 'glca_block': [0.1, 0.247]}, tracked_norm=1.009,
                  curve=dict(epoch=[1, 2], fused=[27.3, 66.0]))
    [row] = [line for line in rehearsal.fgvc_section({'fine-tuned': record}) if line.startswith('| fine-tuned |')]
    assert row == '| fine-tuned | 66.0 | 63.7 | 62.7 | 23.6, 24.7 | +0.9% (+0.0010% per iteration) |'
