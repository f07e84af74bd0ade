import numpy as np
import torch
from PIL import Image

from dcal_plugin.visualization import colorize, rollout_figure, save_rollout_figure


def test_colorize_maps_min_to_dark_and_max_to_bright_monotonically():
    heat = np.linspace(0.0, 3.0, 50).reshape(5, 10)
    assert colorize(heat).dtype == np.uint8
    colors = colorize(heat).reshape(-1, 3).astype(int)
    assert tuple(colors[0]) == (0, 0, 4) and tuple(colors[-1]) == (252, 255, 164)
    brightness = colors.sum(axis=1)
    assert np.all(np.diff(brightness) >= 0)
    assert np.all(colorize(np.full((2, 2), 7.0)) == colorize(np.zeros((2, 2))))


def test_rollout_figure_has_three_panels_and_outlines_the_queries():
    image = np.full((64, 32, 3), 128, dtype=np.uint8)
    heat = np.zeros((4, 2))
    heat[3, 1] = 1.0
    picture = np.asarray(rollout_figure(image, heat, local_queries=[7]))
    assert picture.shape == (64, 3 * 32 + 8, 3)
    assert (picture[:, :32] == 128).all()  # the input panel is the image itself
    overlay = picture[:, 2 * 36:]
    assert tuple(overlay[48, 16]) == (0, 255, 255) and tuple(overlay[63, 31]) == (0, 255, 255)  # patch (3, 1) corners
    assert tuple(overlay[0, 0]) != (0, 255, 255)


def test_save_rollout_figure_writes_a_png(tmp_path):
    path = save_rollout_figure(tmp_path / 'a' / 'b.png', np.zeros((16, 16, 3), np.uint8), np.random.rand(2, 2))
    with Image.open(path) as written:
        assert written.format == 'PNG' and written.size == (56, 16)


def test_bfloat16_and_float32_tensors_draw_as_their_float32_array():
    """A rollout of a bfloat16 model may come as a bfloat16 tensor: numpy has no such dtype, the picture is the same."""
    image = np.full((16, 16, 3), 100, dtype=np.uint8)
    heat = torch.rand(2, 2, generator=torch.Generator().manual_seed(0)).bfloat16()
    want = np.asarray(rollout_figure(image, heat.float().numpy(), local_queries=[1]))
    for tensor in (heat, heat.float()):
        np.testing.assert_array_equal(np.asarray(rollout_figure(image, tensor, local_queries=[1])), want)
    np.testing.assert_array_equal(colorize(heat), colorize(heat.float().numpy()))
