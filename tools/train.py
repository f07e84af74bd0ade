"""Train a DCAL model with mmengine's Runner: ``python tools/train.py CONFIG [options]`` (mmpretrain's conventions)."""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, DictAction

from dcal_plugin.mmpretrain.runner import build_runner, use_gloo_without_cuda


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a DCAL classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints (default: work_dirs/CONFIG_NAME)')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CKPT',
                        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision with mmengine\'s AmpOptimWrapper: float16 with a dynamic loss scale '
                             '(bfloat16, unscaled: add --cfg-options optim_wrapper.dtype=bfloat16); needs a GPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch) / auto_scale_lr.base_batch_size (DCAL configs: on)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation during training')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, e.g. model.backbone.checkpoint_path=ckpt.pth')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch: torchrun, see tools/dist_train.sh)')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Fold the command line into the config."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        check_amp_device()
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    use_gloo_without_cuda(cfg)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # a loss scale for float16's range only: bfloat16's is float32's, and the scale's checks wait on the GPU
    if args.amp:
        cfg.optim_wrapper.setdefault(
            'loss_scale', dict(enabled=False) if cfg.optim_wrapper.get('dtype') == 'bfloat16' else 'dynamic')
    return cfg


def check_amp_device() -> None:
    """Refuse ``--amp`` where mmengine's ``AmpOptimWrapper`` cannot run (it needs a CUDA, NPU, MLU or MUSA device)."""
    from mmengine.device import get_device
    if get_device() == 'cpu':
        raise SystemExit('--amp: mmengine\'s AmpOptimWrapper trains on a GPU (CUDA, NPU, MLU or MUSA) only, and this '
                         'machine has none; train in float32 without --amp, or on a GPU machine')


def main() -> None:
    args = parse_args()
    cfg = apply_args(Config.fromfile(args.config), args)
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
