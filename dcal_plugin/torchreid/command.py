"""``tools/train_reid.py`` (``dcal train-reid``): train and test DCAL Re-ID through torchreid's engine, as its main.py.

    python tools/train_reid.py --config-file configs/reid/dcal_deit-tiny_veri776.yaml --root DATA \\
        model.checkpoint checkpoints/deit_tiny_patch16_224.fb_in1k.pth [KEY VALUE ...]

Test only: ``test.evaluate True model.load_weights LOG/model/model.pth.tar-120``.
Resume: ``model.resume LOG/model/model.pth.tar-60``, or ``model.resume auto`` (the latest complete checkpoint).
Several GPUs: the model trains in ``nn.DataParallel`` over the visible GPUs (``CUDA_VISIBLE_DEVICES``), as in
torchreid's main.py; checkpoints keep the plain model's keys.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

import torch
import torchreid
from yacs.config import CfgNode

from .config import get_default_config
from .runner import run


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """--config-file, --root, -s/-t datasets, and KEY VALUE overrides, as torchreid's main.py."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config-file', type=str, default='', help='path to a yaml config (configs/reid/*.yaml)')
    parser.add_argument('-s', '--sources', type=str, nargs='+', help='source datasets (delimited by space)')
    parser.add_argument('-t', '--targets', type=str, nargs='+', help='target datasets (delimited by space)')
    parser.add_argument('--root', type=str, default='', help='path to the data root (holds VeRi/ or msmt17/)')
    parser.add_argument('opts', default=None, nargs=argparse.REMAINDER,
                        help='modify config options on the command line: KEY VALUE pairs (after an optional --)')
    args = parser.parse_args(argv)
    args.opts = [opt for opt in args.opts if opt != '--']  # a -- separator, which REMAINDER keeps, is no pair
    return args


def build_config(args: argparse.Namespace) -> CfgNode:
    """Defaults, then the yaml file, then --root/--sources/--targets, then the KEY VALUE overrides."""
    cfg = get_default_config()
    cfg.use_gpu = torch.cuda.is_available()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    if args.root:
        cfg.data.root = args.root
    if args.sources:
        cfg.data.sources = args.sources
    if args.targets:
        cfg.data.targets = args.targets
    cfg.merge_from_list(args.opts)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Log to save_dir as torchreid does, show the config, run."""
    cfg = build_config(parse_args(argv))
    torchreid.utils.set_random_seed(cfg.train.seed)
    log_name = ('test.log' if cfg.test.evaluate else 'train.log') + time.strftime('-%Y-%m-%d-%H-%M-%S')
    sys.stdout = torchreid.utils.Logger(osp.join(cfg.data.save_dir, log_name))
    print(f'Show configuration\n{cfg}\n')
    run(cfg)
