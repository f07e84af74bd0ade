"""Does a config's recipe keep pretrained weights? Its optimizer and schedule over noise gradients, full length.

    python tools/check_recipe.py configs/dcal_vit_cub.py
    python tools/check_recipe.py configs/reid/dcal_vit_veri776.yaml

Builds the config's optimizer and learning-rate schedule as its toolbox does (mmengine's optimizer
wrapper, ``auto_scale_lr`` and param schedulers; torchreid's through ``tools/train_reid.py``'s
builders) on a small stand-in model with pretrained-like weights, runs every epoch of the recipe
with its data set's iterations per epoch and N(0, 1e-4²) noise as the gradient, and prints the
smallest share of its norm any block weight keeps, absolutely and beyond the nominal weight decay
(``dcal_plugin.recipe_check``). Exits with 1 when a block weight keeps 95% or less beyond it
(the coupled ``Adam(weight_decay)`` of old erases weights: 0.1% after 100 CUB epochs).
"""
import argparse
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from dcal_plugin.layouts import OFFICIAL_TRAIN_IMAGES
from dcal_plugin.recipe_check import KEPT_NORM, NormRetention, make_pretrained_like_, norm_retention


def mmpretrain_retention(config: Path, train_images: Optional[int], epochs: Optional[int]) -> NormRetention:
    """The recipe of an MMPretrain config."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from dcal_plugin.mmpretrain.recipe_schedule import recipe_schedule, stand_in_model
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # not a line per parameter group
    cfg = Config.fromfile(str(config))
    images = train_images or OFFICIAL_TRAIN_IMAGES[cfg.train_dataloader.dataset.type]
    model = stand_in_model(cfg)
    make_pretrained_like_(model)
    schedule = recipe_schedule(cfg, model, math.ceil(images / cfg.train_dataloader.batch_size))
    schedule.epochs = epochs or schedule.epochs
    return norm_retention(model, schedule)


def torchreid_retention(config: Path, train_images: Optional[int], epochs: Optional[int]) -> NormRetention:
    """The recipe of a torchreid yaml config."""
    from dcal_plugin.torchreid import get_default_config
    from dcal_plugin.torchreid.recipe_schedule import recipe_schedule, stand_in_model
    cfg = get_default_config()
    cfg.merge_from_file(str(config))
    images = train_images or OFFICIAL_TRAIN_IMAGES[cfg.data.sources[0]]
    model = stand_in_model(cfg)
    make_pretrained_like_(model)
    schedule = recipe_schedule(cfg, model, images // cfg.train.batch_size)
    schedule.epochs = epochs or schedule.epochs
    return norm_retention(model, schedule)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Simulate, print every tenth epoch and the verdict; 0 when the recipe keeps its weights, else 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', type=Path, help='an MMPretrain config (.py) or a torchreid yaml config (.yaml)')
    parser.add_argument('--train-images', type=int,
                        help='training images per epoch (default: the official data set the config trains on)')
    parser.add_argument('--epochs', type=int, help='simulate only this many epochs (default: the recipe\'s)')
    args = parser.parse_args(argv)
    simulate = torchreid_retention if args.config.suffix in ('.yaml', '.yml') else mmpretrain_retention
    with warnings.catch_warnings():  # the schedulers see the optimizer's steps only through their wrapper
        warnings.filterwarnings('ignore', message='Detected call of `scheduler.step\\(\\)` before')
        retention = simulate(args.config, args.train_images, args.epochs)
    kept, beyond = retention.weakest(), retention.weakest_beyond_decay()
    print('epoch  smallest share of its norm a block weight keeps  (beyond the nominal weight decay)')
    for epoch in sorted({*range(9, len(kept), 10), 0, len(kept) - 1}):
        print(f'{epoch + 1:5d}  {100 * kept[epoch]:6.1f}%  ({100 * beyond[epoch]:.1f}%)')
    verdict = min(beyond) > KEPT_NORM
    print(f'{args.config}: {"keeps" if verdict else "ERASES"} pretrained weights (smallest share beyond the weight '
          f'decay {100 * min(beyond):.1f}%, limit {100 * KEPT_NORM:.0f}%)')
    return 0 if verdict else 1


if __name__ == '__main__':
    sys.exit(main())
