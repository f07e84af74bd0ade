"""Does the attention rollout find the region that decides the class? (issue 7, on CUB's bounding boxes).

For every test image of a CUB-200-2011 folder (``images.txt``, ``train_test_split.txt``,
``bounding_boxes.txt``; the digits-CUB generator writes the deciding digit's box there), the box is
taken through the config's own test pipeline (resize, crop) as a mask, and a patch counts as
inside when at least half of it is. Reported, per model: the share of the top-R patches (R as in
GLCA: ``max(1, round(ratio · P))``) that lie inside the box, for the class-token rollout that
selects GLCA's queries and for the last block's class-token attention alone, beside the share
that R patches drawn at random would have (chance). ``--baseline CKPT`` adds a second model,
e.g. the plain ViT of ``tools/ablation.py`` (its config with ``--baseline-cfg-options``).
Writes ``<out>/localization.md``, ``.json`` and ``<out>/rollout_grid.png`` (images with the box in
green, rollout overlay with the selected queries in cyan).

    python tools/localization.py CONFIG CHECKPOINT [--baseline CKPT] --out-dir docs
"""
import argparse
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose
from PIL import Image, ImageDraw

from dcal_plugin.core import DCALViT, class_token_rollout, num_local_queries
from dcal_plugin.mmpretrain import build_trained_model, draw_rollouts
from dcal_plugin.precision import add_precision_argument, run_in_precision

Box = Tuple[float, float, float, float]  # x, y, width, height in pixels (CUB's bounding_boxes.txt)


def read_test_boxes(data_root: Path) -> List[Tuple[Path, Box]]:
    """``(image path, box)`` of every test image of a CUB-200-2011 folder, in ``images.txt`` order."""
    def table(name: str) -> Dict[str, List[str]]:
        path = data_root / name
        if not path.is_file():
            raise FileNotFoundError(f'{path} not found: {data_root} is not a CUB-200-2011 folder')
        return {fields[0]: fields[1:] for fields in (line.split() for line in path.read_text().splitlines()) if fields}

    images, split, boxes = table('images.txt'), table('train_test_split.txt'), table('bounding_boxes.txt')
    return [(data_root / 'images' / images[key][0], tuple(float(v) for v in boxes[key]))
            for key in images if split[key][0] == '0']


def box_mask(pipeline_after_loading: Compose, image_size: Tuple[int, int], box: Box) -> np.ndarray:
    """The box as a boolean mask ``[H, W]`` of the model input: drawn on the original image size, then taken through the
    test pipeline."""
    height, width = image_size
    mask = np.zeros((height, width, 3), np.uint8)
    x, y, w, h = box
    mask[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))] = 255
    packed = pipeline_after_loading(dict(img=mask, img_shape=(height, width), ori_shape=(height, width)))
    return packed['inputs'][0].numpy() > 127


def patches_inside(mask: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """Mask ``[H, W]`` -> bool ``[h·w]`` (row-major): patches at least half covered by the mask."""
    rows, columns = grid
    cells = mask[:mask.shape[0] // rows * rows, :mask.shape[1] // columns * columns].reshape(
        rows, mask.shape[0] // rows, columns, mask.shape[1] // columns)
    return (cells.mean(axis=(1, 3)) >= 0.5).reshape(-1)


def top_share_inside(scores: torch.Tensor, inside: np.ndarray, count: int) -> float:
    """Share of the ``count`` highest ``scores [P]`` whose patch is inside."""
    return float(inside[scores.topk(count).indices.numpy()].mean())


def localization_scores(model, samples: List[dict], inside: List[np.ndarray]) -> Dict[str, float]:
    """Mean share inside the box of the top-R rollout patches and of the top-R last-block class attention patches."""
    dcal = model.backbone.dcal
    if not isinstance(dcal, DCALViT):
        raise ValueError(f'tools/localization.py reads DCALViT\'s per-block maps, not {type(dcal).__name__}\'s')
    count = num_local_queries(dcal.vit.patch_embed.num_patches, dcal.local_query_ratio)
    shares = {'rollout': [], 'last-layer attention': []}
    for start in range(0, len(samples), 32):
        chunk = samples[start:start + 32]
        batch = model.data_preprocessor({'inputs': [s['inputs'] for s in chunk],
                                         'data_samples': [s['data_samples'] for s in chunk]}, False)
        maps = dcal.attention_maps(batch['inputs'])
        rollout = class_token_rollout(maps[:dcal.glca_block_index + 1], dcal.residual_weight, rows_sum_to_one=True,
                                      num_prefix_tokens=dcal.num_prefix_tokens)
        last = maps[-1][:, 0, dcal.num_prefix_tokens:]
        for index, mask in enumerate(inside[start:start + len(chunk)]):
            shares['rollout'].append(top_share_inside(rollout[index], mask, count))
            shares['last-layer attention'].append(top_share_inside(last[index], mask, count))
    return {name: 100 * float(np.mean(values)) for name, values in shares.items()}


def grid_picture(model, samples: List[dict], masks: List[np.ndarray], zoom: int) -> Image.Image:
    """Rows of (input with the box, rollout, overlay with the selected queries), enlarged ``zoom`` times."""
    rows = []
    for sample, mask, picture in zip(samples, masks, draw_rollouts(model, samples)):
        picture = Image.fromarray(picture)
        ys, xs = np.nonzero(mask)
        if len(xs):
            ImageDraw.Draw(picture).rectangle((xs.min(), ys.min(), xs.max(), ys.max()), outline=(0, 255, 0))
        rows.append(picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST))
    canvas = Image.new('RGB', (rows[0].width, sum(row.height + 4 for row in rows)), (255, 255, 255))
    for index, row in enumerate(rows):
        canvas.paste(row, (0, index * (rows[0].height + 4)))
    return canvas


def evaluate(config: Config, checkpoint: str, test_items: List[Tuple[Path, Box]],
             precision: str = 'float32') -> Tuple[object, dict, list, list]:
    """The trained model (in ``precision``), its scores, the packed test samples and their box masks."""
    model, _ = build_trained_model(config, checkpoint)
    steps = config.test_dataloader.dataset.pipeline
    pipeline, after_loading = Compose(steps), Compose(steps[1:])
    samples, masks = [], []
    for path, box in test_items:
        sample = pipeline(dict(img_path=str(path)))
        with Image.open(path) as image:
            masks.append(box_mask(after_loading, (image.height, image.width), box))
        samples.append(sample)
    grid = model.backbone.dcal.grid_size
    inside = [patches_inside(mask, grid) for mask in masks]
    with torch.no_grad(), run_in_precision(model, precision):
        scores = localization_scores(model, samples, inside)
    scores['chance'] = 100 * float(np.mean([mask.mean() for mask in inside]))
    return model, scores, samples, masks


def shown(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it (for the report)."""
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='a checkpoint written by tools/train.py (or tools/publish_model.py)')
    parser.add_argument('--baseline',
                        help='a second checkpoint to compare, e.g. the SA-only model of tools/ablation.py')
    parser.add_argument('--baseline-name', default='baseline', help='its row label, e.g. "plain ViT (SA only)"')
    parser.add_argument('--baseline-cfg-options', nargs='+', action=DictAction, default={},
                        help='config changes for the baseline, e.g. model.backbone.use_glca=False')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--out-dir', type=Path, default=Path('docs'))
    parser.add_argument('--grid', type=int, default=8, help='images in rollout_grid.png (spread over the test set)')
    parser.add_argument('--zoom', type=int, default=3)
    add_precision_argument(parser)
    args = parser.parse_args(argv)
    config = Config.fromfile(args.config)
    config.merge_from_dict(args.cfg_options)
    data_root = Path(config.test_dataloader.dataset.data_root)
    test_items = read_test_boxes(data_root)
    model, scores, samples, masks = evaluate(config, args.checkpoint, test_items, args.precision)
    results = {'DCAL': scores}
    if args.baseline:
        baseline_config = Config.fromfile(args.config)
        baseline_config.merge_from_dict(dict(args.cfg_options, **args.baseline_cfg_options))
        results[args.baseline_name] = evaluate(baseline_config, args.baseline, test_items, args.precision)[1]
    count = num_local_queries(model.backbone.dcal.vit.patch_embed.num_patches, model.backbone.dcal.local_query_ratio)
    lines = [
        '# Does the rollout find the region that decides the class?', '',
        f'{len(test_items)} test images of `{data_root}`; share (%) of the top-R = {count} patches that lie inside the '
        'box of `bounding_boxes.txt` (a patch counts when at least half of it is inside), mean over images. '
        'Chance: the share of R patches drawn at random (the box\'s share of the patch grid).', '',
        f'- model: `{shown(args.checkpoint)}` (`{args.config}`)'] + (
        [f'- {args.baseline_name}: `{shown(args.baseline)}` ({args.baseline_cfg_options})']
        if args.baseline else []) + [
        '', '| model | rollout top-R | last-layer class attention top-R | chance |', '|---|---|---|---|']
    for name, row in results.items():
        lines.append(f"| {name} | {row['rollout']:.1f} | {row['last-layer attention']:.1f} | {row['chance']:.1f} |")
    lines += ['', '![rollout grid](rollout_grid.png)', '']
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / 'localization.md').write_text('\n'.join(lines))
    (args.out_dir / 'localization.json').write_text(json.dumps(
        dict(config=args.config, checkpoint=shown(args.checkpoint), baseline=args.baseline and shown(args.baseline),
             images=len(test_items),
             local_queries=count, results=results), indent=1))
    step = max(1, len(samples) // args.grid)
    picks = list(range(0, len(samples), step))[:args.grid]
    with run_in_precision(model, args.precision):
        grid = grid_picture(model, [samples[i] for i in picks], [masks[i] for i in picks], args.zoom)
    grid.save(args.out_dir / 'rollout_grid.png')
    print('\n'.join(lines))
    return results


if __name__ == '__main__':
    main()
