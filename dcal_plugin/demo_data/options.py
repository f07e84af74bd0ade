"""Option records for the demo data generators, validated on construction."""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple, Type, TypeVar

OptionsT = TypeVar('OptionsT', bound='RenderOptions')
DIGIT_COLOURS = ('random', 'white')
# The built-in data sets (seed 0) of `make demo` (digits-CUB: 10 classes x (150 train + 30 test) on 48x48 canvases)
# and of `make demo-reid` (digits-VeRi-776: big clean digits on 32x32 canvases; 30 training identities, i.e.
# handwritten samples, x 40 views, 50 test identities); `make ablation` uses both.
DEMO_FGVC_OPTIONS = dict(image_size=48, digit_scale=(0.55, 0.9), clutter=0.2, digit_colour='white',
                         train_per_class=150, test_per_class=30)
DEMO_REID_OPTIONS = dict(image_size=32, digit_scale=(0.7, 0.95), clutter=0.0, num_train_ids=30,
                         images_per_train_id=40, num_test_ids=50, gallery_per_test_id=5, num_cameras=6)


@dataclass(frozen=True)
class RenderOptions:
    """How each image is drawn: canvas side (px), digit side (lo, hi) in canvas sides, clutter, JPEG quality, colour."""

    image_size: int = 64
    digit_scale: Tuple[float, float] = (0.45, 0.7)
    clutter: float = 0.3
    jpeg_quality: int = 95
    digit_colour: str = 'random'  # 'random' bright hue per image, or 'white' (far easier for a ViT from scratch)

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
    val_per_train_id: int = 1  # MSMT17 only: extra images per train identity, listed in list_val.txt

    def __post_init__(self) -> None:
        """Also require non-empty splits, >= 2 cameras (query and gallery views differ) and val_per_train_id >= 0."""
        super().__post_init__()
        counts = (self.num_train_ids, self.images_per_train_id, self.num_test_ids, self.gallery_per_test_id)
        if min(counts) < 1:
            raise ValueError('num_train_ids, images_per_train_id, num_test_ids, gallery_per_test_id must be >= 1')
        if self.num_cameras < 2:
            raise ValueError(f'num_cameras must be >= 2, got {self.num_cameras}')
        if self.val_per_train_id < 0:
            raise ValueError(f'val_per_train_id must be >= 0, got {self.val_per_train_id}')


def parse_options(options_type: Type[OptionsT], options: Dict[str, Any], unused: Sequence[str] = ()) -> OptionsT:
    """Build options_type from keyword options, naming the accepted ones (its fields but unused) when one is unknown."""
    accepted = [field.name for field in dataclasses.fields(options_type) if field.name not in unused]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f'unknown option(s) {unknown}; this layout accepts {accepted}')
    return options_type(**options)


def check_cameras(options: ReidOptions, max_cameras: int, layout_name: str) -> None:
    """Reject more cameras than the layout's camera-id field holds (1-based ids up to max_cameras, e.g. 999)."""
    if options.num_cameras > max_cameras:
        raise ValueError(f'{layout_name} file names hold camera ids up to {max_cameras}: num_cameras must be '
                         f'<= {max_cameras}, got {options.num_cameras}')
