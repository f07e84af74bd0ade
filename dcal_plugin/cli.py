"""``dcal COMMAND ...`` (also ``python -m dcal_plugin``): the shipped tools and configs, for a pip install as for a
clone.

``dcal train dcal_vit_cub`` runs ``tools/train.py`` on the shipped ``configs/dcal_vit_cub.py``
(a config is named by its file name, or given as a path); ``dcal configs`` lists the configs,
``dcal configs NAME`` prints one's path (to inherit it: ``_base_ = ['that path']``), ``dcal configs
--copy DIR`` copies them all (to inherit by a relative path); ``dcal demo`` is ``make demo``.
"""
import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .demo_data.options import DEMO_FGVC_OPTIONS
from .layouts import CUB_FOLDER
from .resources import config_names, config_path, shipped_dir, tool_path

# command -> (tool script, how its config is given: 'first' positional, the value of an option, or None; the extras
# of setup.cfg it needs)
TOOLS = {
    'train': ('train.py', 'first', ('mmpretrain',)),
    'test': ('test.py', 'first', ('mmpretrain',)),
    'vis-rollout': ('vis_rollout.py', 'first', ('mmpretrain',)),
    'export-onnx': ('export_onnx.py', 'first', ('mmpretrain', 'onnx')),
    'publish-model': ('publish_model.py', None, ('mmpretrain',)),
    'make-demo-data': ('make_demo_data.py', None, ()),
    'pretrain-source-vit': ('pretrain_source_vit.py', None, ()),
    'train-reid': ('train_reid.py', '--config-file', ('torchreid',)),
    'demo-reid': ('demo_reid.py', None, ('torchreid',)),
}
EXTRA_MODULES = {'mmpretrain': ('mmpretrain', 'mmengine'), 'torchreid': ('torchreid',),
                 'onnx': ('onnx', 'onnxscript')}  # what each extra installs, by import name
DEMO_CONFIG = 'dcal_deit-tiny_digits-cub.py'


def option_flags(options: dict) -> List[str]:
    """make_demo_data.py's flags for generator options: ``{'image_size': 48}`` -> ``['--image-size', '48']``."""
    flags = []
    for name, value in options.items():
        flags += [f'--{name.replace("_", "-")}', *map(str, value if isinstance(value, tuple) else (value,))]
    return flags


# The built-in data of `make demo`: digits in the CUB-200-2011 layout, 10 classes x (150 train + 30 test).
DEMO_DATA_ARGS = ('--layout', 'cub', '--overwrite', *option_flags(DEMO_FGVC_OPTIONS))


def resolve_config(argument: str) -> str:
    """An existing file as given, else the shipped config of that name."""
    return argument if Path(argument).is_file() else str(config_path(argument))


def check_extra(command: str) -> None:
    """Raise naming the pip extras to install when a package ``command``'s tool imports is missing."""
    missing = {extra: names for extra in TOOLS[command][2]
               if (names := [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None])}
    if missing:
        raise ValueError(f'{command} needs {", ".join(name for names in missing.values() for name in names)}, '
                         f'which is not installed: pip install "dcal-plugin[{",".join(missing)}]"')


def tool_command(command: str, args: Sequence[str]) -> List[str]:
    """The interpreter command line that runs ``command``'s tool with ``args``, its config resolved by name."""
    script, config_at, _ = TOOLS[command]
    args = list(args)
    if config_at == 'first' and args and not args[0].startswith('-'):
        args[0] = resolve_config(args[0])
    elif config_at is not None and config_at in args[:-1]:
        index = args.index(config_at) + 1
        args[index] = resolve_config(args[index])
    return [sys.executable, str(tool_path(script)), *args]


def run_tool(command: str, args: Sequence[str]) -> int:
    """Run one tool in its own interpreter, as ``python tools/SCRIPT ARGS`` would; its exit status."""
    check_extra(command)
    return subprocess.call(tool_command(command, args))


def run_demo(out: Path) -> int:
    """``make demo``: write the digits data, fine-tune the built-in pretrained ViT, test, draw heat-maps under
    ``out``."""
    config, work_dir = str(config_path(DEMO_CONFIG)), out / 'work_dir'
    data_root = ['--cfg-options', *(f'{loader}.dataset.data_root={out / "data" / CUB_FOLDER}'
                                    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'))]
    steps = [('make-demo-data', [str(out / 'data'), *DEMO_DATA_ARGS]),
             ('train', [config, '--work-dir', str(work_dir), *data_root]),
             ('test', [config, None, '--work-dir', str(work_dir), *data_root]),
             ('vis-rollout', [config, None, '--test-set', '4', '--zoom', '4', '--out', str(out / 'heatmaps'),
                              *data_root])]
    for command, args in steps:
        checkpoint = (work_dir / 'last_checkpoint').read_text().strip() if None in args else None
        status = run_tool(command, [checkpoint if arg is None else arg for arg in args])
        if status:
            return status
    return 0


def list_configs(name: Optional[str], copy_to: Optional[Path]) -> int:
    """Print every config name, or one config's path; or copy the configs folder to ``copy_to``."""
    if copy_to is not None:
        if copy_to.exists():
            raise ValueError(f'{copy_to} exists: copy the configs to a new folder (nothing is overwritten)')
        shutil.copytree(shipped_dir('configs'), copy_to, ignore=shutil.ignore_patterns('__pycache__'))
        print(f'copied the DCAL configs to {copy_to}')
    elif name is not None:
        print(config_path(name))
    else:
        print('\n'.join(config_names()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``dcal COMMAND ARGS``; a tool's arguments go to it unparsed (``dcal train --help`` lists them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog='dcal', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for command, (script, _, _) in TOOLS.items():
        commands.add_parser(command, help=f'tools/{script} (dcal {command} --help lists its arguments)')
    demo = commands.add_parser('demo', help='make demo: digits data, fine-tune, test, heat-maps (CPU, minutes)')
    demo.add_argument('--out', type=Path, default=Path('demo_output'), help='output folder (default demo_output)')
    configs = commands.add_parser('configs', help='list the configs, print the path of one, or copy them')
    configs.add_argument('name', nargs='?', help='a config name (e.g. dcal_vit_cub): print its path')
    configs.add_argument('--copy', type=Path, metavar='DIR', help='copy the configs folder (with _base_/) to DIR')
    try:
        if argv and argv[0] in TOOLS:
            return run_tool(argv[0], argv[1:])
        args = parser.parse_args(argv)
        if args.command == 'demo':
            return run_demo(args.out)
        return list_configs(args.name, args.copy)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f'dcal {argv[0]}: error: {error}\n')
