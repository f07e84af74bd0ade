"""What a pip user gets: the wheel carries configs and tools, ``dcal`` finds them by name, a user config inherits them.

The wheel is built from a copy of the sources and unpacked (a pure-Python wheel unpacked is what
pip installs), then run from a folder outside the repository with only the unpacked wheel on the path.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dcal_plugin import cli
from dcal_plugin.demo_data.options import DEMO_FGVC_OPTIONS
from dcal_plugin.resources import config_names

from .conftest import REPO

pytestmark = pytest.mark.slow  # a wheel built and installed

SOURCES = ('dcal_plugin', 'configs', 'tools', 'setup.py', 'setup.cfg', 'pyproject.toml', 'MANIFEST.in', 'README.md')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """(wheel file, folder it is unpacked in) of ``pip wheel`` on a copy of the sources."""
    base = tmp_path_factory.mktemp('wheel')
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, base / 'src' / name, **({'ignore': shutil.ignore_patterns('__pycache__')}
                                                  if (REPO / name).is_dir() else {}))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w',
                    str(base / 'dist'), str(base / 'src')], check=True, capture_output=True, timeout=300)
    (built,) = (base / 'dist').glob('dcal_plugin-*.whl')
    with zipfile.ZipFile(built) as archive:
        archive.extractall(base / 'site')
    return built, base / 'site'


def run_installed(site, cwd, *args, timeout=600):
    """``python -m dcal_plugin ARGS`` with only the unpacked wheel on the path, from ``cwd``; its output."""
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, '-m', 'dcal_plugin', *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_the_wheel_ships_every_config_and_tool_and_the_dcal_command(wheel):
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        (entry_points,) = [name for name in names if name.endswith('entry_points.txt')]
        assert 'dcal = dcal_plugin.cli:main' in archive.read(entry_points).decode()
    shipped = {str(path.relative_to(REPO)) for folder in ('configs', 'tools') for path in (REPO / folder).rglob('*')
               if path.is_file() and '__pycache__' not in path.parts}
    assert {name.removeprefix('dcal_plugin/.mim/') for name in names if name.startswith('dcal_plugin/.mim/')} == shipped


def test_an_installed_wheel_finds_its_configs_and_a_user_config_inherits_them(wheel, tmp_path):
    _, site = wheel
    path = Path(run_installed(site, tmp_path, 'configs', 'dcal_vit_cub').strip())
    assert path == site / 'dcal_plugin' / '.mim' / 'configs' / 'dcal_vit_cub.py'
    assert run_installed(site, tmp_path, 'configs').split() == config_names()
    run_installed(site, tmp_path, 'configs', '--copy', tmp_path / 'dcal_configs')
    (tmp_path / 'by_path.py').write_text(f'_base_ = [{str(path)!r}]\nmodel = dict(head=dict(num_classes=7))\n')
    (tmp_path / 'by_copy.py').write_text("_base_ = ['./dcal_configs/dcal_vit_cub.py']\n"
                                         "train_dataloader = dict(batch_size=4)\n")
    check = ('import sys; from mmengine.config import Config; cfg = Config.fromfile(sys.argv[1]); '
             'print(cfg.model.backbone.type, cfg.model.backbone.model_name, cfg.model.head.num_classes, '
             'cfg.train_dataloader.batch_size, cfg.train_dataloader.dataset.type)')
    env = dict(os.environ, PYTHONPATH=str(site))
    for config, want in (('by_path.py', 'DCALVisionTransformer vit_base_patch16_224 7 16 CUB'),
                         ('by_copy.py', 'DCALVisionTransformer vit_base_patch16_224 200 4 CUB')):
        result = subprocess.run([sys.executable, '-c', check, config], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.stdout.strip() == want, result.stderr[-2000:]


def test_an_installed_wheel_trains_and_tests_the_demo_config_by_name(wheel, digits_roots, tmp_path):
    _, site = wheel
    roots = [f'{loader}.dataset.data_root={digits_roots["cub"]}'
             for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    output = run_installed(site, tmp_path, 'train', 'dcal_deit-tiny_digits-cub', '--work-dir', tmp_path / 'work',
                           '--cfg-options', 'train_cfg.max_epochs=1', *roots)  # from the wheel's pretrained ViT
    assert 'Epoch(train) [1]' in output and (tmp_path / 'work' / 'epoch_1.pth').is_file()
    output = run_installed(site, tmp_path, 'test', 'dcal_deit-tiny_digits-cub', tmp_path / 'work' / 'epoch_1.pth',
                           '--work-dir', tmp_path / 'work', '--cfg-options', *roots)
    assert re.search(r'DCAL test top-1 \(%\): SA [\d.]+  GLCA [\d.]+  fused [\d.]+  \(chance 10.0\)', output)


def test_tool_commands_resolve_a_config_name_and_leave_paths_alone(tmp_path):
    yaml = str(REPO / 'configs' / 'reid' / 'dcal_vit_veri776.yaml')
    assert cli.tool_command('train-reid', ['--root', 'data', '--config-file', 'dcal_vit_veri776'])[-1] == yaml
    command = cli.tool_command('train', ['dcal_vit_cub', '--work-dir', 'w'])
    assert command[1:] == [str(REPO / 'tools' / 'train.py'), str(REPO / 'configs' / 'dcal_vit_cub.py'),
                           '--work-dir', 'w']
    own = tmp_path / 'mine.py'
    own.write_text('')
    assert cli.tool_command('test', [str(own), 'ckpt.pth'])[2:] == [str(own), 'ckpt.pth']


def test_refusals_name_what_to_do(monkeypatch, tmp_path, capsys):
    (tmp_path / 'taken').mkdir()
    for argv, message in ((['train', 'dcal_vit_birds'], "'dcal_vit_birds' is not a shipped config"),
                          (['configs', '--copy', str(tmp_path / 'taken')], 'exists: copy the configs to a new folder')):
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    real_find_spec = cli.importlib.util.find_spec
    for absent, message in (({'onnxscript'}, 'needs onnxscript, which is not installed: '
                                             'pip install "dcal-plugin[onnx]"'),
                            ({'mmpretrain'}, 'needs mmpretrain, which is not installed: '
                                             'pip install "dcal-plugin[mmpretrain]"')):
        monkeypatch.setattr(cli.importlib.util, 'find_spec',
                            lambda name, absent=absent: None if name in absent else real_find_spec(name))
        with pytest.raises(SystemExit):
            cli.main(['export-onnx', 'dcal_vit_cub', 'ckpt.pth'])
        assert message in capsys.readouterr().err


def test_the_demo_runs_end_to_end_into_any_folder(monkeypatch, tmp_path):
    """``dcal demo --out DIR`` at a reduced size (3 + 2 images per class, 1 epoch), from a folder without
    demo_output/."""
    monkeypatch.setattr(cli, 'DEMO_DATA_ARGS', ('--layout', 'cub', '--image-size', '48', '--train-per-class', '3',
                                                '--test-per-class', '2'))
    full_tool = cli.run_tool
    monkeypatch.setattr(cli, 'run_tool', lambda command, args: full_tool(
        command, [*args, 'train_cfg.max_epochs=1'] if command == 'train' else args))  # onto its --cfg-options
    monkeypatch.chdir(tmp_path)
    assert cli.main(['demo', '--out', str(tmp_path / 'elsewhere')]) == 0
    assert (tmp_path / 'elsewhere' / 'work_dir' / 'epoch_1.pth').is_file()
    assert len(list((tmp_path / 'elsewhere' / 'heatmaps').glob('*_rollout.png'))) == 4
    assert not (tmp_path / 'demo_output').exists()


def test_the_demo_data_options_become_make_demo_data_flags():
    import importlib.util
    spec = importlib.util.spec_from_file_location('make_demo_data', REPO / 'tools' / 'make_demo_data.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    flags = cli.option_flags({'image_size': 48, 'digit_scale': (0.55, 0.9), 'digit_colour': 'white'})
    assert flags == ['--image-size', '48', '--digit-scale', '0.55', '0.9', '--digit-colour', 'white']
    _, args = tool.parse_args(['root', '--layout', 'cub', *cli.option_flags(DEMO_FGVC_OPTIONS)])
    assert {name: getattr(args, name) for name in DEMO_FGVC_OPTIONS} == {
        name: list(value) if isinstance(value, tuple) else value for name, value in DEMO_FGVC_OPTIONS.items()}


def test_a_missing_built_in_checkpoint_says_how_to_write_it(monkeypatch, tmp_path):
    from dcal_plugin import resources
    monkeypatch.setattr(resources, 'BUILTIN_CHECKPOINT', tmp_path / 'gone.pth')
    with pytest.raises(FileNotFoundError, match='tools/pretrain_source_vit.py .*make pretrained'):
        resources.builtin_checkpoint()
