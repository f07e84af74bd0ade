"""Render one sample: a cluttered RGB canvas with one deciding handwritten digit (or a pair) pasted on it."""
import colorsys
import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

from .options import RenderOptions

INK_THRESHOLD = 0.25
WHITE = np.full(3, 255.0, np.float32)  # digit coverage above which a pixel counts as part of the deciding digit's box


@dataclass(frozen=True)
class Style:
    """A rendering style (a re-ID "camera"): background tint RGB in 0..255, noise grid cells, stroke angle (rad)."""

    tint: Tuple[float, float, float]
    noise_cells: int
    stroke_angle: float


@dataclass(frozen=True)
class Rendered:
    """One rendered sample and where its deciding digit went (S = image_size)."""

    image: np.ndarray  # (S, S, 3) uint8, the sample
    background: np.ndarray  # (S, S, 3) uint8, the same canvas before the digit was pasted
    alpha: np.ndarray  # (S, S) float32 in [0, 1], coverage of the pasted digit
    box: Tuple[int, int, int, int]  # (x, y, w, h) tight box of alpha > INK_THRESHOLD
    square: Tuple[int, int, int]  # (x, y, side) square the 8x8 digit was scaled into


def random_style(rng: np.random.Generator) -> Style:
    """Draw a dark, low-saturation background tint, a noise grid size and a dominant stroke angle."""
    tint = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.4))
    return Style(
        tint=tuple(255.0 * c for c in tint),
        noise_cells=int(rng.integers(3, 9)),
        stroke_angle=float(rng.uniform(0.0, math.pi)),
    )


def render_sample(
    ink: np.ndarray,
    rng: np.random.Generator,
    style: Style,
    options: RenderOptions,
    fragment_pool: np.ndarray,
) -> Rendered:
    """Render digit ink (8, 8) in [0, 1] at a random position/scale over clutter drawn with style and rng."""
    size = options.image_size
    background = _to_uint8(_cluttered_canvas(rng, style, options, fragment_pool))
    side = round(rng.uniform(*options.digit_scale) * size)
    x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    alpha = np.zeros((size, size), np.float32)
    alpha[y:y + side, x:x + side] = _resize_ink(ink, side, side)
    image = background.astype(np.float32)
    colour = _bright_colour(rng)  # drawn in both modes, so that 'white' changes nothing else
    _paint(image, alpha, colour if options.digit_colour == 'random' else WHITE, 1.0)
    return Rendered(_to_uint8(image), background, alpha, _tight_box(alpha > INK_THRESHOLD), (x, y, side))


def render_pair(
    inks: Tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    style: Style,
    options: RenderOptions,
    fragment_pool: np.ndarray,
) -> np.ndarray:
    """Image (S, S, 3) uint8: two digits' ink (8, 8), the first in the left half and the second in the right, over
    clutter.

    Each digit's side is ``digit_scale`` times the canvas side, at most half of it; its position
    in its half is random.
    """
    size = options.image_size
    image = _cluttered_canvas(rng, style, options, fragment_pool)
    half = size // 2
    for slot, ink in enumerate(inks):
        side = min(half, round(rng.uniform(*options.digit_scale) * size))
        x = slot * half + int(rng.integers(0, half - side + 1))
        y = int(rng.integers(0, size - side + 1))
        alpha = np.zeros((size, size), np.float32)
        alpha[y:y + side, x:x + side] = _resize_ink(ink, side, side)
        _paint(image, alpha, _bright_colour(rng) if options.digit_colour == 'random' else WHITE, 1.0)
    return _to_uint8(image)


def _cluttered_canvas(rng: np.random.Generator, style: Style, options: RenderOptions,
                      fragment_pool: np.ndarray) -> np.ndarray:
    """Canvas (S, S, 3) float32: tinted noise, blobs, strokes and digit fragments as much as ``clutter``, pixel
    noise."""
    size = options.image_size
    canvas = _noise_background(rng, style, size, options.clutter)
    for _ in range(rng.poisson(6.0 * options.clutter)):
        _paint(canvas, _blob_mask(rng, size), _jitter_colour(rng, style.tint, 60.0), rng.uniform(0.1, 0.35))
    for _ in range(rng.poisson(5.0 * options.clutter)):
        _paint(canvas, _stroke_mask(rng, size, style.stroke_angle), _bright_colour(rng), rng.uniform(0.15, 0.4))
    for _ in range(rng.poisson(3.0 * options.clutter)):
        _paint(canvas, _fragment_mask(rng, size, fragment_pool), _bright_colour(rng), rng.uniform(0.25, 0.5))
    canvas += rng.normal(0.0, 2.0 + 8.0 * options.clutter, canvas.shape)
    return canvas


def _noise_background(rng: np.random.Generator, style: Style, size: int, clutter: float) -> np.ndarray:
    """Tinted canvas (S, S, 3) float32 plus smooth colour noise upsampled from a (cells, cells) grid."""
    amplitude = 10.0 + 40.0 * clutter
    grid = rng.normal(0.0, amplitude, (style.noise_cells, style.noise_cells, 3)).astype(np.float32)
    smooth = np.stack([_resize_float(grid[..., c], size, size) for c in range(3)], axis=-1)
    return smooth + np.asarray(style.tint, np.float32)


def _blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Mask (S, S) float32 in {0, 1} of one random ellipse."""
    cx, cy = rng.uniform(0, size, 2)
    rx, ry = rng.uniform(0.05, 0.25, 2) * size
    mask = Image.new('L', (size, size), 0)
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(mask, np.float32) / 255.0


def _stroke_mask(rng: np.random.Generator, size: int, angle: float) -> np.ndarray:
    """Mask (S, S) float32 in {0, 1} of one line near the style's stroke angle."""
    theta = angle + rng.uniform(-0.5, 0.5)
    length = rng.uniform(0.2, 0.6) * size
    x0, y0 = rng.uniform(0, size, 2)
    x1, y1 = x0 + length * math.cos(theta), y0 + length * math.sin(theta)
    mask = Image.new('L', (size, size), 0)
    ImageDraw.Draw(mask).line([x0, y0, x1, y1], fill=255, width=int(rng.integers(1, max(2, size // 32) + 1)))
    return np.asarray(mask, np.float32) / 255.0


def _fragment_mask(rng: np.random.Generator, size: int, pool: np.ndarray) -> np.ndarray:
    """Coverage (S, S) float32 of a small crop (4-6 rows/cols) of a random pool digit (M, 8, 8), scaled down."""
    ink = pool[rng.integers(len(pool))]
    rows, cols = (int(v) for v in rng.integers(4, 7, size=2))
    top, left = int(rng.integers(0, 9 - rows)), int(rng.integers(0, 9 - cols))
    scale = rng.uniform(0.1, 0.25) * size / 8.0
    height, width = max(2, round(rows * scale)), max(2, round(cols * scale))
    x, y = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    mask = np.zeros((size, size), np.float32)
    mask[y:y + height, x:x + width] = _resize_ink(ink[top:top + rows, left:left + cols], width, height)
    return mask


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour: np.ndarray, opacity: float) -> None:
    """Blend colour (3,) into canvas (S, S, 3) in place, weighted by coverage (S, S) times opacity."""
    weight = (coverage * opacity)[..., None]
    canvas *= 1.0 - weight
    canvas += weight * colour


def _bright_colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated, bright RGB colour (3,) float32 in 0..255."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.85, 1.0))
    return 255.0 * np.asarray(rgb, np.float32)


def _jitter_colour(rng: np.random.Generator, base: Tuple[float, float, float], spread: float) -> np.ndarray:
    """base RGB plus Gaussian jitter, clipped to 0..255, as (3,) float32."""
    return np.clip(np.asarray(base, np.float32) + rng.normal(0.0, spread, 3), 0.0, 255.0).astype(np.float32)


def _resize_ink(ink: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of ink (h, w) in [0, 1] to (height, width), clipped back to [0, 1]."""
    return np.clip(_resize_float(ink, width, height), 0.0, 1.0)


def _resize_float(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of a float map (h, w) to (height, width) float32."""
    image = Image.fromarray(np.ascontiguousarray(values, np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), np.float32)


def _tight_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(x, y, w, h) of the True pixels of mask (S, S)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round and clip a float canvas to uint8."""
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
