"""Pretrain the built-in source ViT (the stand-in for ImageNet weights) and save it in timm's format.

    python tools/pretrain_source_vit.py   # make pretrained: configs/_pretrained_/deit-tiny-p8-d4_digit-pairs.pth

timm's DeiT-Tiny layout cut to 4 blocks with 8x8 patches at 32x32, trained on which two digits a
canvas shows (45 classes; none of the built-in data sets' test samples), then saved as a plain
state_dict beside a JSON record (source test accuracy per epoch, the samples held out). The demo,
``make ablation`` and the fine-tuning rehearsal fine-tune it through ``checkpoint_path``.
"""
import argparse
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from dcal_plugin.resources import BUILTIN_CHECKPOINT, shipped_dir
from dcal_plugin.source_pretraining import PretrainingSettings, pretrain_source_vit

BUILTIN_PATH = shipped_dir('configs') / BUILTIN_CHECKPOINT


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse OUT and the settings, train, write OUT and OUT's .json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', type=Path, nargs='?', default=BUILTIN_PATH,
                        help=f'the checkpoint file to write (default: the built-in one, {BUILTIN_PATH})')
    for field in dataclasses.fields(PretrainingSettings):
        parser.add_argument(f'--{field.name.replace("_", "-")}', type=type(field.default), default=field.default,
                            help=f'default {field.default}')
    args = vars(parser.parse_args(argv))
    out = args.pop('out')
    record = pretrain_source_vit(out, PretrainingSettings(**args))
    print(f'wrote {out} and {out.with_suffix(".json")}: source test top-1 {record["source_test_top1"][-1]:.1f}% '
          f'after {len(record["source_test_top1"])} epochs, {record["seconds"]} s')


if __name__ == '__main__':
    main()
