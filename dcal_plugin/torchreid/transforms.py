"""TransReID's train transform (flip, padding 10 then a random crop, random erasing) for torchreid's ImageDataManager.

torchreid's ``build_transforms`` has a fixed list of names, and its ``random_crop`` is another
augmentation (with probability 0.5, enlarge by 1/8 and crop back); so the data manager is built
with torchreid's names stripped of :data:`TRANSREID`, and :func:`use_transreid_train_transform`
then replaces its train transform, in the one place that knows where torchreid keeps it.
"""
from typing import Sequence

from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

TRANSREID = 'transreid'  # the name of TransReID's train transform in cfg.data.transforms


def transreid_train_transform(height: int, width: int, norm_mean: Sequence[float], norm_std: Sequence[float],
                              flip_prob: float = 0.5, padding: int = 10, erase_prob: float = 0.5) -> T.Compose:
    """TransReID's ViT train transform: PIL image -> normalised ``[3, height, width]``.

    In TransReID's order (``datasets/make_dataloader.py``; ``INPUT.PROB``, ``PADDING``, ``RE_PROB``
    of its ViT configs): bicubic resize, horizontal flip with ``flip_prob``, ``padding`` black pixels
    on every side, a random ``height`` × ``width`` crop (every time), to [0, 1], normalisation, then
    timm's ``RandomErasing`` with ``erase_prob`` in ``mode='pixel'``: one rectangle of 2% to 1/3 of
    the area, aspect ratio log-uniform in [0.3, 1/0.3], filled with standard normal noise per pixel
    (after normalisation), not torchreid's constant mean.
    """
    return T.Compose([
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=flip_prob),
        T.Pad(padding),
        T.RandomCrop((height, width)),
        T.ToTensor(),
        T.Normalize(mean=list(norm_mean), std=list(norm_std)),
        RandomErasing(probability=erase_prob, mode='pixel', max_count=1, device='cpu'),
    ])


def use_transreid_train_transform(datamanager, **kwargs) -> None:
    """Give a built ``ImageDataManager`` TransReID's train transform, normalised as its test transform.

    Size and normalisation are the data manager's (``height``, ``width``, the ``Normalize`` of its
    test transform); ``kwargs`` go to :func:`transreid_train_transform`. Build the data manager
    with ``transforms=[]``: its own train transform is replaced, not extended.
    """
    dataset = datamanager.train_loader.dataset
    normalize = [t for t in getattr(datamanager.transform_te, 'transforms', []) if isinstance(t, T.Normalize)]
    if not hasattr(dataset, 'transform') or len(normalize) != 1:
        raise RuntimeError('torchreid\'s layout has changed: the data manager\'s train_loader.dataset.transform or the '
                           'one Normalize of its transform_te is missing, so its train transform cannot be replaced')
    transform = transreid_train_transform(datamanager.height, datamanager.width, normalize[0].mean,
                                          normalize[0].std, **kwargs)
    datamanager.transform_tr = dataset.transform = transform
