"""Option records for the demo data generators, validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

OptionsT = TypeVar('OptionsT', bound='RenderOptions')
DIGIT_COLOURS = ('random', 'white')


@dataclass(frozen=True)
class RenderOptions:
    """How each image is drawn: canvas side (px), digit side as a (lo, hi) fraction of it, clutter, JPEG quality, and
    the deciding digit's colour ('white' is far easier than 'random' for a ViT trained from scratch)."""

    image_size: int = 64
    digit_scale: tuple[float, float] = (0.45, 0.7)
    clutter: float = 0.3
    jpeg_quality: int = 95
    digit_colour: str = 'random'  # 'random' bright hue per image, or 'white'

    def __post_init__(self) -> None:
        """Normalise digit_scale to a float pair and reject out-of-range values."""
        lo, hi = (float(v) for v in self.digit_scale)
        object.__setattr__(self, 'digit_scale', (lo, hi))
        if self.image_size < 16:
            raise ValueError(f'image_size must be >= 16, got {self.image_size}')
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f'digit_scale must satisfy 0 < lo <= hi <= 1, got {self.digit_scale}')
        if round(lo * self.image_size) < 8:
            raise ValueError('digit_scale[0] * image_size must be >= 8 px (the source digits are 8x8)')
        if not 0.0 <= self.clutter <= 1.0:
            raise ValueError(f'clutter must be in [0, 1], got {self.clutter}')
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {self.jpeg_quality}')
        if self.digit_colour not in DIGIT_COLOURS:
            raise ValueError(f'digit_colour must be one of {DIGIT_COLOURS}, got {self.digit_colour!r}')


@dataclass(frozen=True)
class FgvcOptions(RenderOptions):
    """Fine-grained classification counts: images per digit class in the train and the test split."""

    train_per_class: int = 60
    test_per_class: int = 20

    def __post_init__(self) -> None:
        """Also require at least one image per class and split."""
        super().__post_init__()
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise ValueError('train_per_class and test_per_class must be >= 1')


@dataclass(frozen=True)
class ReidOptions(RenderOptions):
    """Re-ID counts: train ids x images each, test ids x (1 query + gallery images), cameras (rendering styles)."""

    num_train_ids: int = 40
    images_per_train_id: int = 6
    num_test_ids: int = 20
    gallery_per_test_id: int = 4
    num_cameras: int = 6

    def __post_init__(self) -> None:
        """Also require non-empty splits and at least two cameras (query and gallery views differ)."""
        super().__post_init__()
        counts = (self.num_train_ids, self.images_per_train_id, self.num_test_ids, self.gallery_per_test_id)
        if min(counts) < 1:
            raise ValueError('num_train_ids, images_per_train_id, num_test_ids, gallery_per_test_id must be >= 1')
        if self.num_cameras < 2:
            raise ValueError(f'num_cameras must be >= 2, got {self.num_cameras}')


@dataclass(frozen=True)
class VeriOptions(ReidOptions):
    """VeRi-776 options: as ReidOptions, with camera ids limited to VeRi's 3-digit cCCC field."""

    def __post_init__(self) -> None:
        """Also reject cameras beyond c999."""
        super().__post_init__()
        if self.num_cameras > 999:
            raise ValueError(f'VeRi camera ids have 3 digits: num_cameras must be <= 999, got {self.num_cameras}')


@dataclass(frozen=True)
class MsmtOptions(ReidOptions):
    """MSMT17 adds a validation list: extra images per train identity, listed in list_val.txt."""

    val_per_train_id: int = 1

    def __post_init__(self) -> None:
        """Also reject a negative validation count and cameras beyond MSMT17's 2-digit field."""
        super().__post_init__()
        if self.val_per_train_id < 0:
            raise ValueError(f'val_per_train_id must be >= 0, got {self.val_per_train_id}')
        if self.num_cameras > 99:
            raise ValueError(f'MSMT17 camera ids have 2 digits: num_cameras must be <= 99, got {self.num_cameras}')


def parse_options(options_type: type[OptionsT], options: dict[str, Any]) -> OptionsT:
    """Build options_type from keyword options, naming the accepted ones when an option is unknown."""
    accepted = [field.name for field in dataclasses.fields(options_type)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f'unknown option(s) {unknown}; this layout accepts {accepted}')
    return options_type(**options)
