"""Test a trained DCAL model: ``python tools/test.py CONFIG CHECKPOINT [options]`` (mmpretrain's conventions).

Prints top-1/top-5 of the fused SA + GLCA prediction and top-1 of SA alone, GLCA alone and fused;
``--precision bfloat16`` (the model cast) or ``amp-bfloat16`` (float32 weights under autocast) tests in half precision.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.dist import get_rank

from dcal_plugin.mmpretrain.runner import (
    build_runner, check_trained_checkpoint, old_checkpoint_help, use_gloo_without_cuda)
from dcal_plugin.precision import add_precision_argument, run_in_precision


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a DCAL classifier')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file written by tools/train.py (or tools/publish_model.py)')
    parser.add_argument('--work-dir', help='folder for the test log (default: work_dirs/CONFIG_NAME)')
    parser.add_argument('--out', help='dump the per-image predictions to this pickle file')
    parser.add_argument('--sa-only', action='store_true', help='SA-only inference (GLCA skipped)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    add_precision_argument(parser)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.sa_only:
        cfg.model.backbone.sa_only_inference = True
    if args.out:
        cfg.test_evaluator = list(cfg.test_evaluator) + [dict(type='DumpResults', out_file_path=args.out)]
    use_gloo_without_cuda(cfg)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    runner = build_runner(cfg)
    check_trained_checkpoint(runner.model, args.checkpoint)  # mmengine would only warn, and score random weights
    with old_checkpoint_help(args.checkpoint), run_in_precision(runner.model, args.precision):
        metrics = runner.test()
    if metrics and get_rank() == 0:
        print(summary(metrics, cfg.model.head.num_classes))


def summary(metrics: dict, num_classes: int) -> str:
    """One line: top-1 (%) of SA, GLCA and the fused prediction, beside the chance level."""
    branches = '  '.join(f'{name} {metrics[key]:.1f}' for name, key in
                         (('SA', 'dcal/sa_top1'), ('GLCA', 'dcal/glca_top1'), ('fused', 'dcal/fused_top1'))
                         if key in metrics)
    return f'DCAL test top-1 (%): {branches}  (chance {100.0 / num_classes:.1f})'


if __name__ == '__main__':
    main()
