"""Publish a trained checkpoint, as mmpretrain's ``tools/model_converters/publish_model.py`` does: weights only, hash in
the name.

    python tools/publish_model.py work_dirs/RUN/epoch_100.pth dcal_vit_cub.pth   # -> dcal_vit_cub-1a2b3c4d.pth

Keeps ``state_dict`` and ``meta`` (config, dataset classes; as plain data), drops the optimizer, the
schedulers and the message hub, and appends the first 8 hex digits of the file's SHA-256. The input
is read with ``weights_only=True``; a checkpoint written before dcal-plugin stored plain data
(``HistoryBuffer`` inside) needs ``--trust-pickle``, which unpickles it fully and so runs any code the
file holds: only for files your own runs wrote with an older dcal-plugin, never for a file from elsewhere.
"""
import argparse
import hashlib
import os
from typing import Optional, Sequence

import torch

from dcal_plugin.mmpretrain.plain_checkpoint_hook import to_plain
from dcal_plugin.mmpretrain.runner import old_checkpoint_help


def publish(in_file: str, out_file: str, trust_pickle: bool = False) -> str:
    """Write ``in_file``'s weights and meta to ``OUT-<sha256[:8]>.pth``; return that path."""
    with old_checkpoint_help(in_file):
        checkpoint = torch.load(in_file, map_location='cpu', weights_only=not trust_pickle)
    if 'state_dict' not in checkpoint:
        raise ValueError(f'{in_file} has no state_dict: is it a checkpoint of tools/train.py?')
    published = dict(state_dict=checkpoint['state_dict'], meta=to_plain(checkpoint.get('meta', {})))
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    os.makedirs(os.path.dirname(stem) or '.', exist_ok=True)
    temporary = stem + '.tmp.pth'
    torch.save(published, temporary)
    with open(temporary, 'rb') as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    final = f'{stem}-{digest[:8]}.pth'
    os.replace(temporary, final)
    return final


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_file', help='a checkpoint of tools/train.py')
    parser.add_argument('out_file', help='output name; the hash is appended before .pth')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle the input fully, which RUNS ANY CODE THE FILE HOLDS: only for checkpoints '
                             'your own runs wrote with an older dcal-plugin, never for a file from elsewhere')
    args = parser.parse_args(argv)
    print(publish(args.in_file, args.out_file, args.trust_pickle))


if __name__ == '__main__':
    main()
