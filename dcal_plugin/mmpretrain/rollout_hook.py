"""``AttentionRolloutHook``: rollout heat-maps of fixed validation images, written to the visualizer's backends."""
import logging
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ..visualization import rollout_figure
from .unwrap import unwrap


@HOOKS.register_module()
class AttentionRolloutHook(Hook):
    """Every ``interval`` epochs, after validation, draw input | rollout | overlay (GLCA's queries outlined).

    The images are the first ``num_images`` of the validation set, through its test pipeline;
    each picture goes to ``runner.visualizer.add_image(f'{prefix}_{i}', ..., step=epoch)``, i.e.
    to every configured backend (PNG files under the run's ``vis_data/vis_image/`` with
    ``LocalVisBackend``, TensorBoard with ``TensorboardVisBackend``). A model without a rollout
    (Swin: PWCA only) draws nothing, and the log says so once.

    Args:
        interval (int): epochs between two drawings. Defaults to 1.
        num_images (int): validation images drawn. Defaults to 4.
        prefix (str): image name prefix. Defaults to ``'rollout'``.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 1, num_images: int = 4, prefix: str = 'rollout') -> None:
        if interval < 1 or num_images < 1:
            raise ValueError('interval and num_images must be >= 1')
        self.interval = interval
        self.num_images = num_images
        self.prefix = prefix

    def before_run(self, runner) -> None:
        """Say once when the model has no rollout to draw."""
        if not has_rollout(unwrap(runner.model)):
            print_log(f'AttentionRolloutHook: {type(unwrap(runner.model).backbone.dcal).__name__} has no attention '
                      'rollout (no GLCA): no heat-maps are drawn', logger='current', level=logging.WARNING)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Draw the heat-maps when the epoch is a multiple of ``interval``."""
        if runner.epoch % self.interval != 0 and runner.epoch != runner.max_epochs or not has_rollout(
                unwrap(runner.model)):
            return
        dataset = runner.val_dataloader.dataset
        samples = [dataset[index] for index in range(min(self.num_images, len(dataset)))]
        model = unwrap(runner.model)
        for index, picture in enumerate(draw_rollouts(model, samples)):
            runner.visualizer.add_image(f'{self.prefix}_{index}', picture, step=runner.epoch)


def has_rollout(model) -> bool:
    """Whether an mmpretrain DCAL model's backbone computes the class-token rollout (its ``rollout_map``)."""
    return hasattr(model.backbone.dcal, 'rollout_map')


@torch.no_grad()
def draw_rollouts(model, samples: list) -> list:
    """Packed samples (``inputs`` uint8 ``[3, H, W]``) -> RGB pictures ``[H, 3W+8, 3]`` uint8 of an mmpretrain DCAL
    model."""
    if not has_rollout(model):
        raise ValueError(f'{type(model.backbone.dcal).__name__} computes no attention rollout (Swin: PWCA only, no '
                         'GLCA): there is no heat-map to draw')
    was_training = model.training
    model.eval()
    try:
        batch = model.data_preprocessor({'inputs': [s['inputs'] for s in samples],
                                         'data_samples': [s['data_samples'] for s in samples]}, False)
        dcal = model.backbone.dcal
        heat = dcal.rollout_map(batch['inputs'])
        queries = dcal(batch['inputs']).local_query_index
    finally:
        model.train(was_training)
    pictures = []
    for index, sample in enumerate(samples):
        image = sample['inputs'].permute(1, 2, 0).numpy()
        if getattr(model.data_preprocessor, 'to_rgb', False):
            image = image[..., ::-1]
        local = None if queries is None else queries[index].tolist()
        pictures.append(np.asarray(rollout_figure(np.ascontiguousarray(image), heat[index], local)))
    return pictures
