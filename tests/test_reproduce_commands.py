"""Every command of docs/reproduce.md, run as written at a reduced size: its config, timm checkpoint path and data paths
work.

Reduced: one transformer block, 32x32 images, digits data in the real layouts under ``data/``, and in
``checkpoints/`` a checkpoint that timm itself writes for that reduced model (position embeddings
are resized on load). FGVC commands (``tools/dist_train.sh CONFIG GPUS ...``) run through
``tools/train.py``'s own argument parsing and Runner in one process (``--launcher none``) for one
epoch of 3 iterations; Re-ID commands through ``tools/train_reid.py``'s parsing and one DCALEngine step.
"""
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip('mmpretrain')
pytest.importorskip('torchreid')

from dcal_plugin.core import paper_pretrained_tag  # noqa: E402
from dcal_plugin.demo_data import make_demo_data  # noqa: E402

pytestmark = pytest.mark.slow  # the reproduce commands run at a reduced size

ROOT = Path(__file__).resolve().parents[1]
ROWS = [line for line in (ROOT / 'docs' / 'reproduce.md').read_text().splitlines()
        if re.match(r'\| [^|]+ \| [^|]+ \| `(tools/|python )', line)]
COMMANDS = [re.findall(r'`([^`]+)`', line)[0] for line in ROWS]
FGVC = [c for c in COMMANDS if c.startswith('tools/dist_train.sh')]
REID = [c for c in COMMANDS if c.startswith('python tools/train_reid.py')]
FGVC_DATA = {'cub': ('cub', 'CUB_200_2011'), 'cars': ('stanford_cars', 'stanfordcars'),
             'aircraft': ('fgvc_aircraft', 'fgvc_aircraft')}
# The paper's Table 2 (METHOD §9), mAP/Rank-1 baseline -> DCAL, on the two person data sets beside MSMT17
PAPER_PERSON_ROWS = {
    ('DeiT-Tiny', 'Market-1501'): '77.9/90.3 → 79.8/91.8', ('DeiT-Tiny', 'DukeMTMC-reID'): '69.5/82.9 → 71.7/84.9',
    ('DeiT-Small', 'Market-1501'): '84.3/93.7 → 85.3/94.0', ('DeiT-Small', 'DukeMTMC-reID'): '75.7/87.6 → 77.4/87.9',
    ('DeiT-Base', 'Market-1501'): '86.6/94.4 → 87.2/94.5', ('DeiT-Base', 'DukeMTMC-reID'): '79.1/88.7 → 80.2/89.6',
    ('ViT-Base', 'Market-1501'): '87.1/94.3 → 87.5/94.7', ('ViT-Base', 'DukeMTMC-reID'): '78.9/89.4 → 80.1/89.0',
}


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reduced(model_name: str) -> dict:
    """timm arguments of the reduced model: one block (Swin: one block in each stage, so the width stays)."""
    return dict(depths=(1, 1, 1, 1)) if model_name.startswith('swin') else dict(depth=1)


def first_qkv(model_name: str) -> str:
    """The name of the first block's qkv weight in the timm model."""
    return f'{"layers.0." if model_name.startswith("swin") else ""}blocks.0.attn.qkv.weight'


def write_reduced_timm_checkpoint(path: Path, model_name: str) -> torch.Tensor:
    """What a user does with real weights, for a reduced model: timm builds it, torch saves its state_dict.

    Returns the first block's qkv weight, which a load must reproduce (a fresh init draws other values).
    """
    torch.manual_seed(1)
    vit = timm.create_model(model_name, pretrained=False, **reduced(model_name))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vit.state_dict(), path)
    return vit.state_dict()[first_qkv(model_name)].clone()


def checkpoint_column(command: str) -> str:
    """The row's 'timm checkpoint' cell for ``command``."""
    [row] = [row for row in ROWS if f'`{command}`' in row]
    return re.findall(r'`([^`]+)`', row)[1]


def test_the_document_has_every_row_of_the_papers_tables():
    beyond = [row for row in ROWS if '| none |' in row]  # the modern rows: 3 backbones on CUB and VeRi-776
    assert len(FGVC) == 15 + 2 + 3 and len(REID) == 16 + 1 + 3 and len(beyond) == 6
    # METHOD §9: 5 backbones x 3 FGVC sets, 4 backbones x 4 Re-ID sets, the supplementary's Swin-T (CUB, MSMT17) and
    # CaiT-XS24 (CUB), each with the paper's numbers
    assert all(re.search(r'\| [\d./]+ → [\d./]+ \| \|$', row) for row in ROWS if row not in beyond)
    assert all(row.endswith('| |') for row in ROWS)  # an empty column for our numbers
    person = {tuple(cell.strip() for cell in row.split('|')[1:3]): row.split('|')[-3].strip()
              for row in ROWS if 'market1501' in row or 'dukemtmcreid' in row}
    assert person == PAPER_PERSON_ROWS


@pytest.mark.parametrize('command', FGVC, ids=lambda c: Path(shlex.split(c)[1]).stem)
def test_fgvc_command_runs_at_a_reduced_size(command, tmp_path, monkeypatch):
    from mmengine.config import Config
    train = load_tool('train')
    script, config, gpus, *options = shlex.split(command)
    assert script == 'tools/dist_train.sh' and int(gpus) >= 1 and (ROOT / config).is_file()
    monkeypatch.chdir(tmp_path)
    args = train.parse_args([str(ROOT / config), '--launcher', 'none', '--work-dir', str(tmp_path / 'work'), *options])
    cfg = train.apply_args(Config.fromfile(args.config), args)
    layout, folder = FGVC_DATA[Path(config).stem.rsplit('_', 1)[1]]
    data_root = Path(cfg.train_dataloader.dataset.data_root)
    assert data_root == Path('data') / folder
    data_root.parent.mkdir()
    model_name = cfg.model.backbone.model_name
    size = 28 if 'patch14' in model_name else 32  # a 2 x 2 patch grid
    make_demo_data(tmp_path / 'generated', layout, image_size=size, train_per_class=1,
                   test_per_class=1).rename(data_root)
    checkpoint = Path(cfg.model.backbone.checkpoint_path)
    assert checkpoint.name == checkpoint_column(command) == f'{model_name}.{paper_pretrained_tag(model_name)}.pth'
    qkv = write_reduced_timm_checkpoint(checkpoint, cfg.model.backbone.model_name)
    cfg.model.backbone.update(img_size=size, **reduced(model_name))
    cfg.model.head.num_classes = 10  # the generated data's digits (DatasetCheckHook refuses a head of other size)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.train_cfg.update(max_epochs=1, val_interval=2)
    runner = train.build_runner(cfg)
    runner.train()
    assert runner.iter == 3  # 10 images, the command's batch of 4
    backbone = runner.model.backbone.dcal.vit
    assert backbone.pretrained_cfg['architecture'] == model_name
    torch.testing.assert_close(backbone.state_dict()[first_qkv(model_name)], qkv, rtol=0, atol=1e-3)  # loaded, 3 steps


@pytest.mark.parametrize('command', REID, ids=lambda c: Path(shlex.split(c)[3]).stem)
def test_reid_command_runs_at_a_reduced_size(command, tmp_path, monkeypatch):
    from dcal_plugin.torchreid import build_engine
    from dcal_plugin.torchreid.registry import MODEL_NAMES
    from dcal_plugin.torchreid import command as train_reid  # what tools/train_reid.py runs
    python, script, *argv = shlex.split(command)
    assert script == 'tools/train_reid.py'
    monkeypatch.chdir(tmp_path)
    cfg = train_reid.build_config(train_reid.parse_args(
        [a if not a.startswith('configs/') else str(ROOT / a) for a in argv]))
    dataset = cfg.data.targets[0]  # the layout (MSMT17 trains on msmt17_trainval, the same files)
    model_name = MODEL_NAMES[cfg.model.name]
    size = 28 if 'patch14' in model_name else 32  # a 2 x 2 patch grid
    make_demo_data(Path(cfg.data.root), dataset, image_size=size, num_train_ids=2, images_per_train_id=4,
                   num_test_ids=2, gallery_per_test_id=2, num_cameras=2)
    checkpoint = Path(cfg.model.checkpoint)
    assert (checkpoint.name == checkpoint_column(command)
            == f'{model_name}.{paper_pretrained_tag(model_name, "reid")}.pth')
    qkv = write_reduced_timm_checkpoint(checkpoint, MODEL_NAMES[cfg.model.name])
    cfg.merge_from_list(['data.height', size, 'data.width', size, 'data.workers', 0, 'train.batch_size', 8,
                         'test.ranks', [1], 'data.save_dir', str(tmp_path / 'log'), 'use_gpu', False])
    cfg.model.timm_kwargs.update(reduced(model_name))
    engine = build_engine(cfg)
    torch.testing.assert_close(engine.model.dcal.vit.state_dict()[first_qkv(model_name)], qkv)
    engine.model.train()
    summary = engine.forward_backward(next(iter(engine.train_loader)))
    branches = {'loss_sa', 'loss_pwca'} | ({'loss_glca'} if cfg.model.use_glca else set())
    assert branches == {key for key in summary if key.startswith('loss_')}
    assert torch.isfinite(torch.tensor(summary['loss']))
