"""The built-in pretrained ViT: timm's DeiT-Tiny layout cut to 4 blocks, trained on the digit-pairs source task.

It stands in for the ImageNet weights the paper fine-tunes, which cannot be downloaded here: a
timm ``VisionTransformer`` trained in plain PyTorch on another task (which two digits a 32x32
canvas shows, :mod:`dcal_plugin.demo_data.digit_pairs`, none of the built-in data sets' test
samples), saved as timm saves a state_dict. The demo and the fine-tuning rehearsal load it
through ``checkpoint_path`` at their own image sizes, position embeddings resized, as a user loads
timm's weights.
"""
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from .demo_data.digit_pairs import PAIRS, held_out_samples, render_digit_pairs, split_pair_sources
from .demo_data.options import RenderOptions

# timm's architecture and the source images (the demo configs build the same architecture at their own sizes)
SOURCE_MODEL = dict(model_name='deit_tiny_patch16_224', img_size=32, patch_size=8, depth=4)
SOURCE_IMAGES = dict(image_size=32, digit_scale=(0.35, 0.5), clutter=0.2, digit_colour='white')


@dataclass(frozen=True)
class PretrainingSettings:
    """How the source ViT is trained: images, epochs, batch, AdamW's lr and weight decay, warm-up, seed."""

    train_images: int = 20000
    test_images: int = 2000
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    seed: int = 0


def build_source_vit(num_classes: int = len(PAIRS)) -> nn.Module:
    """timm's model of :data:`SOURCE_MODEL` with ``num_classes`` outputs, randomly initialised."""
    arguments = dict(SOURCE_MODEL)
    return timm.create_model(arguments.pop('model_name'), pretrained=False, num_classes=num_classes, **arguments)


def pretrain_source_vit(out: Path, settings: PretrainingSettings = PretrainingSettings(),
                        log: Callable[[str], None] = print) -> Dict:
    """Train the source ViT, write its state_dict to ``out`` (timm's format) and its record to ``out``.json; return the
    record.

    Both files are written to a temporary name and renamed, so an interrupted run leaves no
    partial file. The record holds the source test accuracy per epoch and what was held out.
    """
    start = time.time()
    torch.manual_seed(settings.seed)
    held_out = held_out_samples()
    train_pool, test_pool = split_pair_sources(held_out, seed=settings.seed)
    options = RenderOptions(**SOURCE_IMAGES)
    train_images, train_labels = render_digit_pairs(settings.train_images, train_pool, options, settings.seed)
    test_images, test_labels = render_digit_pairs(settings.test_images, test_pool, options, settings.seed + 1)
    log(f'source task: {len(PAIRS)} digit pairs, {settings.train_images} train / {settings.test_images} test images '
        f'({time.time() - start:.0f} s to render); {len(held_out)} sklearn samples held out (the built-in data '
        'sets\' test splits)')
    model = build_source_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(settings.train_images / settings.batch_size)
    warmup_steps = max(1, round(settings.warmup_epochs * steps_per_epoch))
    scheduler = SequentialLR(optimizer, [
        LinearLR(optimizer, start_factor=1 / warmup_steps, total_iters=warmup_steps),
        CosineAnnealingLR(optimizer, T_max=max(1, settings.epochs * steps_per_epoch - warmup_steps))],
        milestones=[warmup_steps])
    generator = torch.Generator().manual_seed(settings.seed)
    accuracies = []
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(settings.train_images, generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * settings.batch_size:(step + 1) * settings.batch_size].numpy()
            loss = F.cross_entropy(model(_normalise(train_images[batch])), torch.from_numpy(train_labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        accuracies.append(_accuracy(model, test_images, test_labels))
        log(f'epoch {epoch + 1}/{settings.epochs}: loss {loss.item():.3f}, source test top-1 {accuracies[-1]:.1f}% '
            f'(chance {100 / len(PAIRS):.1f}%), {time.time() - start:.0f} s')
    record = dict(model=SOURCE_MODEL, images=SOURCE_IMAGES, settings=asdict(settings), classes=len(PAIRS),
                  held_out_samples=held_out.tolist(), source_test_top1=accuracies, seconds=round(time.time() - start))
    _write_atomically(out, lambda path: torch.save(model.state_dict(), path))
    _write_atomically(out.with_suffix('.json'), lambda path: path.write_text(json.dumps(record, indent=1)))
    return record


def _normalise(images: np.ndarray) -> Tensor:
    """uint8 RGB ``[B, S, S, 3]`` -> float ``[B, 3, S, S]`` with ImageNet's mean and std (the demo configs' too)."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    return (pixels - mean) / std


@torch.no_grad()
def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 (%) of ``model`` in eval mode on ``images`` ``[N, S, S, 3]`` with ``labels`` ``[N]``."""
    model.eval()
    correct = sum(int((model(_normalise(images[i:i + batch_size])).argmax(-1).numpy() == labels[i:i + batch_size])
                      .sum()) for i in range(0, len(images), batch_size))
    return 100.0 * correct / len(images)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` to a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + '.partial')
    write(partial)
    os.replace(partial, path)
