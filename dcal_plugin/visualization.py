"""Rollout heat-map pictures: input | heat-map | overlay with GLCA's local queries outlined (numpy + Pillow).

Scores may be numpy arrays or torch tensors of any dtype and device (bfloat16 ones included).
"""
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageDraw

# Anchor colours of a dark-to-bright ramp (black, purple, red, orange, pale yellow).
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
_GAP = 4


Scores = Union[np.ndarray, torch.Tensor]


def as_float_array(scores: Scores) -> np.ndarray:
    """Scores as a float64 array; a tensor goes through float32 first (numpy has no bfloat16)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().float().cpu().numpy()
    return np.asarray(scores, dtype=np.float64)


def colorize(heat: Scores) -> np.ndarray:
    """Scores ``[h, w]`` -> colours ``[h, w, 3]`` uint8, min-max normalised onto a dark-to-bright ramp."""
    heat = as_float_array(heat)
    span = heat.max() - heat.min()
    unit = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    position = unit * (len(_RAMP) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_RAMP) - 2)
    fraction = (position - low)[..., None]
    return np.round(_RAMP[low] * (1 - fraction) + _RAMP[low + 1] * fraction).astype(np.uint8)


def rollout_figure(
        image: np.ndarray,
        heat: Scores,
        local_queries: Optional[Sequence[int]] = None,
        alpha: float = 0.55,
) -> Image.Image:
    """Image ``[H, W, 3]`` uint8 and rollout ``[h, w]`` -> one RGB picture of three ``H×W`` panels side by side.

    ``local_queries`` are row-major patch positions on the ``h×w`` grid; they are outlined on the
    overlay panel.
    """
    image = np.asarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    heat = as_float_array(heat)
    grid = heat.shape
    heat_panel = np.asarray(Image.fromarray(colorize(heat)).resize((width, height), Image.BILINEAR))
    overlay = Image.fromarray(np.round(image * (1 - alpha) + heat_panel * alpha).astype(np.uint8))
    if local_queries is not None:
        _outline_patches(overlay, local_queries, grid)
    canvas = Image.new('RGB', (3 * width + 2 * _GAP, height), (255, 255, 255))
    for column, panel in enumerate((Image.fromarray(image), Image.fromarray(heat_panel), overlay)):
        canvas.paste(panel, (column * (width + _GAP), 0))
    return canvas


def save_rollout_figure(path: Union[str, Path], *args, **kwargs) -> Path:
    """Write :func:`rollout_figure` as a PNG (parent folders created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rollout_figure(*args, **kwargs).save(path, format='PNG')
    return path


def _outline_patches(picture: Image.Image, positions: Sequence[int], grid: Tuple[int, int]) -> None:
    """Draw a cyan rectangle around each patch position (row-major on ``grid``) of ``picture`` in place."""
    draw = ImageDraw.Draw(picture)
    cell_w, cell_h = picture.width / grid[1], picture.height / grid[0]
    for position in positions:
        row, column = divmod(int(position), grid[1])
        box = (column * cell_w, row * cell_h, (column + 1) * cell_w - 1, (row + 1) * cell_h - 1)
        draw.rectangle(box, outline=(0, 255, 255), width=1)
