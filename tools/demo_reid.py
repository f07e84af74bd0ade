"""`make demo-reid`: a small DCAL fine-tuned for Re-ID on the built-in digits, in the VeRi-776 layout, on the CPU.

Writes the digits data set (an identity is one handwritten sample, a camera a rendering style),
fine-tunes the built-in pretrained ViT (configs/_pretrained_, given as ``model.checkpoint``) with
configs/reid/dcal_deit-tiny_digits-veri776.yaml through torchreid's engine with tools/train_reid.py,
and prints mAP and Rank-1/5/10 of SA, GLCA and SA+GLCA beside the chance level (a random
ranking). ``model.checkpoint ''`` trains from scratch. Numbers on this data are not paper numbers.
"""
import argparse
import ast
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from dcal_plugin.demo_data import make_demo_data
from dcal_plugin.demo_data.options import DEMO_REID_OPTIONS
from dcal_plugin.layouts import VERI_FOLDER
from dcal_plugin.resources import builtin_checkpoint, config_path
from dcal_plugin.torchreid.command import main as train_reid

CONFIG = config_path('reid/dcal_deit-tiny_digits-veri776.yaml')


def parse_option(text: str) -> Tuple[str, Any]:
    """'num_train_ids=6' -> ('num_train_ids', 6); the value is a Python literal."""
    key, _, value = text.partition('=')
    return key, ast.literal_eval(value)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write the data under --out, train and test; KEY VALUE pairs override the config (e.g. train.max_epoch 1)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, default=Path('demo_output', 'reid'),
                        help='output folder (default demo_output/reid)')
    parser.add_argument('--data', action='append', default=[], metavar='KEY=VALUE',
                        help=f'change one demo data option (repeatable); defaults {DEMO_REID_OPTIONS}')
    parser.add_argument('opts', nargs=argparse.REMAINDER, help='KEY VALUE config overrides for train_reid.py')
    args = parser.parse_args(argv)
    options = dict(DEMO_REID_OPTIONS, **dict(parse_option(text) for text in args.data))
    start = time.time()
    root = make_demo_data(args.out / 'data', 'veri776', overwrite=True, **options)
    print(f'demo data (sklearn digits, VeRi-776 layout): {root / VERI_FOLDER}; {options}')
    train_reid(['--config-file', str(CONFIG), '--root', str(root), 'data.save_dir', str(args.out / 'log'),
                'model.checkpoint', str(builtin_checkpoint()), *args.opts])
    print(f'demo-reid took {time.time() - start:.0f} s (data, training, test); '
          f'log and checkpoint in {args.out / "log"}')


if __name__ == '__main__':
    main()
