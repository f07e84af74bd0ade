"""Rollout heat-maps of a trained DCAL model: ``python tools/vis_rollout.py CONFIG CHECKPOINT [IMAGE...] --out DIR``.

Writes, per image, ``DIR/<name>_rollout.png``: the input after the config's test pipeline, the
class-token attention rollout, and their overlay with GLCA's local queries outlined; prints the
fused, SA and GLCA predictions.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose
from mmpretrain.registry import DATASETS
from PIL import Image

from dcal_plugin.mmpretrain import build_trained_model, draw_rollouts
from dcal_plugin.precision import add_precision_argument, run_in_precision


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw DCAL attention-rollout heat-maps')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train.py (or tools/publish_model.py)')
    parser.add_argument('images', nargs='*', help='image files')
    parser.add_argument('--test-set', type=int, default=0, metavar='N',
                        help='also draw the first N images of the config\'s test set')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--zoom', type=int, default=1, help='enlarge the pictures this many times (small images)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')
    add_precision_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if not args.images and args.test_set <= 0:
        raise SystemExit('give IMAGE paths or --test-set N')
    model, classes = build_trained_model(cfg, args.checkpoint)
    precision = run_in_precision(model, args.precision)
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for image_path in list(args.images) + test_set_images(cfg, args.test_set):
        if not Path(image_path).is_file():
            raise FileNotFoundError(f'image not found: {image_path}')
        sample = pipeline(dict(img_path=image_path))
        with torch.no_grad(), precision:
            prediction = model.test_step({'inputs': [sample['inputs']], 'data_samples': [sample['data_samples']]})[0]
            picture = Image.fromarray(draw_rollouts(model, [sample])[0])
        picture = picture.resize((picture.width * args.zoom, picture.height * args.zoom), Image.NEAREST)
        target = out / f'{Path(image_path).stem}_rollout.png'
        picture.save(target)
        print(f'{image_path}: ' + '  '.join(
            f'{name} {_label(prediction.get(key), classes)}' for name, key in
            (('fused', 'pred_score'), ('SA', 'sa_score'), ('GLCA', 'glca_score')) if key in prediction)
            + f'  -> {target}')


def test_set_images(cfg: Config, count: int) -> list:
    """Paths of ``count`` images spread evenly over the config's test dataset (so over its classes)."""
    if count <= 0:
        return []
    dataset = DATASETS.build(dict(cfg.test_dataloader.dataset, pipeline=[]))
    step = max(1, len(dataset) // count)
    return [dataset.get_data_info(index)['img_path'] for index in range(0, len(dataset), step)[:count]]


def _label(scores, classes) -> str:
    """``index (name, probability)`` of the highest score."""
    index = int(scores.argmax())
    name = classes[index] if classes else index
    return f'{index} ({name}, {scores[index]:.2f})'


if __name__ == '__main__':
    main()
