"""TransReID's train transform, read through torchreid's data manager: flip, padding 10 then a random crop, erasing."""
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import build_datamanager, transreid_train_transform  # noqa: E402

from .helpers import tiny_config  # noqa: E402

PADDING = 10


def crops(path, height, width, mean, std):
    """Every crop ``[2 flips, 21, 21, 3, H, W]`` of the bicubic-resized, maybe mirrored, 10-pixel-padded image."""
    pixels = np.asarray(Image.open(path).convert('RGB').resize((width, height), Image.BICUBIC))
    stacks = []
    for image in (pixels, pixels[:, ::-1]):
        padded = np.pad(image, ((PADDING, PADDING), (PADDING, PADDING), (0, 0)))
        tensor = torch.from_numpy(padded.copy()).permute(2, 0, 1).float() / 255
        tensor = (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        stacks.append(tensor.unfold(1, height, 1).unfold(2, width, 1).permute(1, 2, 0, 3, 4))
    return torch.stack(stacks)


def nearest_crop(output, candidates):
    """(flip, top, left) of the crop differing from ``output`` ``[3, H, W]`` in fewest pixels, and those pixels."""
    differs = ((candidates - output).abs() > 1e-5).any(dim=3)
    index = np.unravel_index(int(differs.flatten(3).sum(3).argmin()), differs.shape[:3])
    return tuple(int(i) for i in index), differs[index]


def is_one_filled_rectangle(mask):
    """Whether the True pixels of ``mask`` [H, W] are exactly one axis-aligned rectangle."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    box = torch.zeros_like(mask)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    return bool(torch.equal(box, mask))


def test_every_draw_is_a_random_crop_of_the_padded_image(veri_data):
    path = veri_data.split('train')[0].path
    mean, std = [0.5] * 3, [0.5] * 3
    transform = transreid_train_transform(32, 16, mean, std, erase_prob=0.0)
    candidates = crops(path, 32, 16, mean, std)
    torch.manual_seed(0)
    seen = []
    for _ in range(60):
        place, differs = nearest_crop(transform(Image.open(path).convert('RGB')), candidates)
        assert not differs.any(), place  # exactly a crop of the padded image (torchreid's random_crop is not)
        seen.append(place)
    assert {flip for flip, _, _ in seen} == {0, 1}  # flip 0.5
    assert len({(top, left) for _, top, left in seen}) > 30  # a crop every time, anywhere in the 21 x 21 offsets


def test_the_config_gives_the_data_manager_transreids_transform_with_random_erasing(veri_data, tmp_path):
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path)
    assert cfg.data.transforms == ['transreid']
    dataset = build_datamanager(cfg).train_loader.dataset
    torch.manual_seed(0)
    erased, noise = 0, []
    for index in range(0, 24, 2):
        candidates = crops(dataset[index]['impath'], 32, 32, cfg.data.norm_mean, cfg.data.norm_std)
        for _ in range(4):
            item = dataset[index]
            _, differs = nearest_crop(item['img'], candidates)
            if differs.any():  # erased: one rectangle of 2% to 1/3 of the image, standard normal noise per pixel
                assert is_one_filled_rectangle(differs) and 0.02 * 32 * 32 * 0.8 <= differs.sum() <= 32 * 32 / 3 * 1.2
                erased += 1
                noise.append(item['img'][:, differs])
    assert 12 <= erased <= 36  # probability 0.5 of 48 draws
    noise = torch.cat(noise, dim=1)
    assert abs(noise.mean()) < 0.2 and 0.8 < noise.std() < 1.2  # not torchreid's constant fill


def test_transreid_replaces_torchreids_names_and_goes_alone(veri_data, tmp_path):
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path, 'data.transforms', ['transreid', 'random_flip'])
    with pytest.raises(ValueError, match="'transreid' is TransReID's whole train transform"):
        build_datamanager(cfg)


def test_the_configs_padding_reaches_the_transform(veri_data, tmp_path):
    """``data.padding`` (TransReID's PADDING, 10 at 256 pixels; a scaled-down recipe pads less)."""
    from torchvision import transforms as T
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path, 'data.padding', 2)
    transform = build_datamanager(cfg).train_loader.dataset.transform
    [pad] = [step for step in transform.transforms if isinstance(step, T.Pad)]
    assert pad.padding == 2
