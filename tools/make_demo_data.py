"""Write built-in demo data (sklearn digits on clutter) in an official dataset layout and print what was written."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from dcal_plugin.demo_data import LAYOUTS, DemoData, build_demo_data

# CLI flag -> make_demo_data option; only flags the user gives are passed on (the layout checks they apply).
OPTION_FLAGS = (
    ('--image-size', 'image_size', int, None, 'canvas side in pixels (default 64)'),
    ('--digit-scale', 'digit_scale', float, 2, 'deciding digit side as LO HI fraction of the canvas (0.45 0.7)'),
    ('--clutter', 'clutter', float, None, 'background clutter strength in [0, 1] (default 0.3)'),
    ('--jpeg-quality', 'jpeg_quality', int, None, 'JPEG quality (default 95)'),
    ('--digit-colour', 'digit_colour', str, None, "deciding digit's colour: random (default) or white"),
    ('--train-per-class', 'train_per_class', int, None, 'cub/stanford_cars/fgvc_aircraft: train images per class'),
    ('--test-per-class', 'test_per_class', int, None, 'cub/stanford_cars/fgvc_aircraft: test images per class'),
    ('--num-train-ids', 'num_train_ids', int, None, 'Re-ID layouts: training identities'),
    ('--images-per-train-id', 'images_per_train_id', int, None, 'Re-ID layouts: images per training identity'),
    ('--num-test-ids', 'num_test_ids', int, None, 'Re-ID layouts: test identities (1 query each)'),
    ('--gallery-per-test-id', 'gallery_per_test_id', int, None, 'Re-ID layouts: gallery images per test identity'),
    ('--num-cameras', 'num_cameras', int, None, 'Re-ID layouts: cameras (rendering styles)'),
    ('--val-per-train-id', 'val_per_train_id', int, None, 'msmt17: extra images per training identity in list_val'),
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse ROOT, --layout, --seed, --overwrite and the optional generator options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('root', help='directory to write the dataset under')
    parser.add_argument('--layout', required=True, choices=LAYOUTS, help='on-disk dataset layout to write')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bytes)')
    parser.add_argument('--overwrite', action='store_true', help="replace the layout's folder if it is not empty")
    for flag, dest, kind, nargs, help_text in OPTION_FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, nargs=nargs, default=None, help=help_text,
                            metavar=('LO', 'HI') if nargs == 2 else None)
    return parser, parser.parse_args(argv)


def summary_lines(data: DemoData) -> list[str]:
    """Human-readable summary: reader root, then images, labels and cameras per split."""
    noun = 'classes' if data.layout in ('cub', 'stanford_cars', 'fgvc_aircraft') else 'identities'
    lines = [f'{data.layout}: dataset root {data.root}']
    for split in data.split_names():
        records = data.split(split)
        line = f'  {split:8s} {len(records):6d} images  {len({r.label for r in records}):4d} {noun}'
        cameras = {r.camera for r in records if r.camera is not None}
        lines.append(f'{line}  {len(cameras):3d} cameras' if cameras else line)
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Generate the dataset and print its summary; option errors exit with a usage message."""
    parser, args = parse_args(argv)
    options: dict[str, Any] = {dest: getattr(args, dest) for _, dest, *_ in OPTION_FLAGS
                               if getattr(args, dest) is not None}
    try:
        data = build_demo_data(args.root, args.layout, seed=args.seed, overwrite=args.overwrite, **options)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print('\n'.join(summary_lines(data)))


if __name__ == '__main__':
    main()
